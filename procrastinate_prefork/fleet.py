"""The fleet table: one row per supervisor and per child slot.

The supervisor writes its own row and all its children's rows, and refreshes
its live children's procrastinate worker heartbeats, in one statement per
interval over its one session. procrastinate's own worker heartbeat stops
while a worker drains; ours does not, so a long job on a live child never
looks stalled to a sweeper.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import psutil
import psycopg
from psycopg.rows import dict_row

from . import queries
from .snapshot import FleetSnapshot

#: rows of supervisors silent for this long are deleted (with their children)
DEFAULT_RETENTION = 3600.0
PRUNE_LOCK_KEY = 0x7072_6566_6F72_6C  # transaction-scoped advisory lock


#: what the heartbeat writes of each child (``snapshot.ChildSnapshot``)
CHILD_ROW_FIELDS = (
    "slot",
    "pid",
    "worker_id",
    "state",
    "job_id",
    "task_name",
    "jobs_done",
    "restarts",
    "rss_bytes",
    "started_at",
    "heartbeat_age",
    "job_age",
    "job_ids",
)


def child_runs_job(child: str, job_id: str) -> str:
    """SQL: the child row ``child`` says it runs the job ``job_id``. The one
    place that knows how a child row lists its running jobs."""
    return f"{job_id} = ANY({child}.job_ids)"


def supervisor_timeout(s: str) -> str:
    """SQL: the seconds of silence after which the supervisor row ``s`` and its
    children count as gone: its declared stalled timeout, or its declared
    heartbeat interval plus the judge's slack if that is longer."""
    return (
        f"GREATEST(COALESCE({s}.stalled_timeout, %(own_timeout)s), "
        f"COALESCE({s}.heartbeat_interval, %(own_interval)s) + %(slack)s)"
    )


def silent(since: str, timeout: str) -> str:
    """SQL: nothing heard since ``since`` for ``timeout`` seconds, and the
    sweeper has been healthy long enough to tell."""
    return (
        f"({since} < now() - make_interval(secs => {timeout}) "
        f"AND {timeout} <= %(healthy_for)s)"
    )


def supervisor_dead(s: str) -> str:
    """SQL: the supervisor row ``s`` stopped or is judged gone."""
    gone = silent(f"{s}.last_heartbeat", supervisor_timeout(s))
    return f"({s}.state = 'stopped' OR {gone})"


def register_supervisor(
    conn: psycopg.Connection,
    *,
    host: str,
    pid: int,
    concurrency: int,
    queues: Sequence[str] | None,
    heartbeat_interval: float | None = None,
    stalled_timeout: float | None = None,
    identity: ProcessIdentity | None = None,
) -> int:
    row = conn.execute(
        queries.get("insert_supervisor"),
        [
            host,
            pid,
            concurrency,
            list(queues) if queues else None,
            heartbeat_interval,
            stalled_timeout,
            identity.boot_id if identity else None,
            identity.pid_namespace if identity else None,
            identity.process_start if identity else None,
        ],
    ).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING gives one row
    return int(row[0])


_HEARTBEAT_SQL_TEMPLATE = """
WITH workers AS (
    -- re-inserted if deleted under a live child (a stock worker's start-up
    -- prune): its next fetch would fail on the foreign key
    INSERT INTO procrastinate_workers AS w (id, last_heartbeat)
    OVERRIDING SYSTEM VALUE
    SELECT id, now() FROM unnest(%(worker_ids)s::bigint[]) AS id
    ON CONFLICT (id) DO UPDATE SET last_heartbeat = now()
    RETURNING w.id
), supervisor AS (
    UPDATE procrastinate_prefork_processes
    SET last_heartbeat = now(), state = %(state)s, crash_loop = %(crash_loop)s,
        concurrency = %(concurrency)s, rss_bytes = %(rss)s
    WHERE id = %(supervisor_id)s
    RETURNING id
), children AS (
    SELECT * FROM jsonb_to_recordset(%(children)s::jsonb) AS c(
        slot integer, pid integer, worker_id bigint, state text, job_id bigint,
        task_name text, jobs_done bigint, restarts integer, rss_bytes bigint,
        started_at timestamptz, heartbeat_age float8, job_age float8,
        job_ids bigint[])
), upserted AS (
    INSERT INTO procrastinate_prefork_processes AS p
        (kind, host, pid, supervisor_id, slot, worker_id, state, job_id, task_name,
         job_started_at, jobs_done, restarts, rss_bytes, started_at, last_heartbeat,
         job_ids)
    SELECT 'child', %(host)s, c.pid, %(supervisor_id)s, c.slot, c.worker_id, c.state,
           c.job_id, c.task_name, now() - make_interval(secs => c.job_age),
           c.jobs_done, c.restarts, c.rss_bytes, c.started_at,
           now() - make_interval(secs => c.heartbeat_age),
           COALESCE(c.job_ids, '{}')
    FROM children AS c WHERE EXISTS (SELECT 1 FROM supervisor)
    ON CONFLICT (supervisor_id, slot) WHERE kind = 'child' DO UPDATE SET
        pid = EXCLUDED.pid, worker_id = EXCLUDED.worker_id, state = EXCLUDED.state,
        job_id = EXCLUDED.job_id, task_name = EXCLUDED.task_name,
        job_started_at = EXCLUDED.job_started_at, job_ids = EXCLUDED.job_ids,
        jobs_done = EXCLUDED.jobs_done, restarts = EXCLUDED.restarts,
        rss_bytes = EXCLUDED.rss_bytes, started_at = EXCLUDED.started_at,
        last_heartbeat = EXCLUDED.last_heartbeat
    RETURNING slot
), reattached AS (
    -- a job whose worker row was deleted under its live child gets its
    -- worker back: the child's death is then recovered like any other
    UPDATE procrastinate_jobs AS job SET worker_id = c.worker_id
    FROM children AS c
    WHERE {runs} AND c.worker_id = ANY(%(worker_ids)s)
      AND job.status = 'doing' AND job.worker_id IS NULL
      AND EXISTS (SELECT 1 FROM workers WHERE workers.id = c.worker_id)
    RETURNING job.id
)
UPDATE procrastinate_prefork_processes
SET state = 'stopped', job_id = NULL, task_name = NULL, job_started_at = NULL,
    worker_id = NULL, job_ids = '{}'
WHERE supervisor_id = %(supervisor_id)s AND kind = 'child'
  AND state <> 'stopped' AND NOT (slot = ANY(%(live_slots)s))
"""
_HEARTBEAT_SQL = _HEARTBEAT_SQL_TEMPLATE.replace(
    "{runs}", child_runs_job("c", "job.id")
)


def heartbeat(
    conn: psycopg.Connection, *, supervisor_id: int, snapshot: FleetSnapshot
) -> None:
    """Write ``snapshot``: the supervisor's row, its children's rows, and the
    heartbeats of its children's procrastinate workers that are not wedged."""
    children = snapshot.children
    payload = []
    for child in children:
        row = {name: getattr(child, name) for name in CHILD_ROW_FIELDS}
        started_at = child.started_at
        row["started_at"] = started_at.isoformat() if started_at else None
        row["job_ids"] = list(child.job_ids)
        payload.append(row)
    try:
        rss = psutil.Process().memory_info().rss
    except psutil.Error:
        rss = None
    conn.execute(
        _HEARTBEAT_SQL,
        {
            "worker_ids": snapshot.fresh_worker_ids(),
            "supervisor_id": supervisor_id,
            "state": snapshot.phase,
            "crash_loop": snapshot.crash_looping,
            "concurrency": snapshot.concurrency,
            "rss": rss,
            "children": json.dumps(payload),
            "host": snapshot.host,
            "live_slots": [child.slot for child in children],
        },
    )


def mark_stopped(conn: psycopg.Connection, supervisor_id: int) -> None:
    # worker_id stays: if a dead child's jobs could not be recovered (database
    # down), the sweep still judges its worker by this supervisor's timeout
    conn.execute(
        queries.get("mark_stopped"),
        [supervisor_id, supervisor_id],
    )


def prune(
    conn: psycopg.Connection, *, judgement: Mapping[str, float], retention: float
) -> int:
    """Mark the supervisors judged gone (see ``recovery.Judgement``, whose
    parameters ``judgement`` holds) stopped with their children, and delete the
    rows of those silent for longer than ``retention``. Leaderless: one pruner
    at a time, others skip."""
    with conn.transaction():
        locked = conn.execute(
            queries.get("try_xact_lock"), {"key": PRUNE_LOCK_KEY}
        ).fetchone()
        if not locked or not locked[0]:
            return 0
        conn.execute(
            "UPDATE procrastinate_prefork_processes AS p "  # noqa: S608
            "SET state = 'stopped', "
            "job_id = NULL, task_name = NULL, job_started_at = NULL, job_ids = '{}' "
            "FROM procrastinate_prefork_processes AS s "
            "WHERE s.id = COALESCE(p.supervisor_id, p.id) AND p.state <> 'stopped' "
            f"AND {supervisor_dead('s')}",
            dict(judgement),
        )
        deleted = conn.execute(
            queries.get("delete_silent_supervisors"),
            [retention],
        )
        return deleted.rowcount


@dataclasses.dataclass(frozen=True)
class ProcessIdentity:
    """Who a process is, in the kernel's terms (no clock): unique across
    reboots (``boot_id``), PID namespaces (``pid_namespace``, the inode of
    ``/proc/<pid>/ns/pid``) and pid reuse (``process_start``, clock ticks
    since boot)."""

    boot_id: str
    pid_namespace: int
    process_start: int


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def parse_start_ticks(stat: str) -> tuple[str, int]:
    """(state, start time in clock ticks since boot) from ``/proc/<pid>/stat``.
    The command name, in parentheses, may hold spaces and parentheses."""
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])  # fields 3 and 22 of proc(5)


def process_identity(pid: int | str = "self") -> ProcessIdentity | None:
    """The identity of a process as seen in our ``/proc``; None where there is
    no ``/proc`` (not Linux) or it cannot be read."""
    try:
        _, start = parse_start_ticks(_read(f"/proc/{pid}/stat"))
        return ProcessIdentity(
            boot_id=_read("/proc/sys/kernel/random/boot_id").strip(),
            pid_namespace=os.stat(f"/proc/{pid}/ns/pid").st_ino,
            process_start=start,
        )
    except (OSError, ValueError, IndexError):
        return None


def predecessor_is_dead(
    *,
    silent: bool,
    recorded: ProcessIdentity | None,
    own: ProcessIdentity | None,
    current_start: int | None,
) -> bool:
    """Whether a supervisor row of our host name is a dead predecessor.

    ``silent``: its heartbeat is older than its own stalled timeout by the
    database's clock. ``current_start``: the start time (clock ticks since
    boot) of the process that has the row's pid in our PID namespace, None if
    there is none or it is a zombie. Only a row of our boot and our PID
    namespace can be judged by its pid: anywhere else the same pid (say 1) is
    another process, alive or not."""
    if silent:
        return True
    if recorded is None or own is None:
        return False
    if (recorded.boot_id, recorded.pid_namespace) != (own.boot_id, own.pid_namespace):
        return False
    return current_start != recorded.process_start


def _current_start(pid: int) -> int | None:
    """Start time of the live process with this pid, None if it is gone.
    A zombie is gone: it runs nothing, and its children died with it."""
    try:
        state, start = parse_start_ticks(_read(f"/proc/{pid}/stat"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if state in ("Z", "X") else start


def dead_predecessors(
    conn: psycopg.Connection,
    *,
    host: str,
    own_id: int,
    stalled_timeout: float,
    identity: ProcessIdentity | None,
) -> list[dict[str, Any]]:
    """Supervisors recorded on this host, not stopped, that are dead for sure
    (see ``predecessor_is_dead``), with the worker ids of their children. A
    row with no stalled timeout of its own is judged by ``stalled_timeout``."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT s.id, s.pid, s.boot_id, s.pid_namespace, s.process_start, "
            "  now() - s.last_heartbeat > make_interval(secs => "
            "    COALESCE(s.stalled_timeout, %s)) AS silent, "
            "  COALESCE(array_agg(c.worker_id) FILTER (WHERE c.worker_id IS NOT NULL),"
            "           '{}') AS worker_ids "
            "FROM procrastinate_prefork_processes AS s "
            "LEFT JOIN procrastinate_prefork_processes AS c ON c.supervisor_id = s.id "
            "WHERE s.kind = 'supervisor' AND s.host = %s AND s.id <> %s "
            "  AND s.state <> 'stopped' "
            "GROUP BY s.id",
            [stalled_timeout, host, own_id],
        ).fetchall()
    dead = []
    for row in rows:
        recorded = None
        if None not in (row["boot_id"], row["pid_namespace"], row["process_start"]):
            recorded = ProcessIdentity(
                row["boot_id"], row["pid_namespace"], row["process_start"]
            )
        same_place = (
            recorded is not None
            and identity is not None
            and (
                (recorded.boot_id, recorded.pid_namespace)
                == (identity.boot_id, identity.pid_namespace)
            )
        )
        try:
            current = _current_start(row["pid"]) if same_place else None
        except OSError:  # e.g. /proc mounted with hidepid: we cannot tell
            continue
        if predecessor_is_dead(
            silent=row["silent"],
            recorded=recorded,
            own=identity,
            current_start=current,
        ):
            dead.append(row)
    return dead


#: Every column the status views show, with ages in seconds computed by the
#: database's clock (so the clocks of the hosts do not matter). A child's
#: ``stalled_timeout`` is its supervisor's. Runs on psycopg and on Django's
#: cursor alike (no parameters).
FLEET_SQL = """
SELECT p.id, p.kind, p.host, p.pid, p.supervisor_id, p.slot, p.worker_id, p.state,
       p.job_id, p.task_name, p.jobs_done, p.restarts, p.rss_bytes, p.crash_loop,
       p.concurrency, p.queues, p.heartbeat_interval,
       COALESCE(p.stalled_timeout, s.stalled_timeout) AS stalled_timeout,
       p.started_at, p.last_heartbeat,
       EXTRACT(EPOCH FROM now() - p.last_heartbeat)::float8 AS heartbeat_age,
       EXTRACT(EPOCH FROM now() - p.started_at)::float8 AS uptime,
       EXTRACT(EPOCH FROM now() - p.job_started_at)::float8 AS job_age
FROM procrastinate_prefork_processes AS p
LEFT JOIN procrastinate_prefork_processes AS s ON s.id = p.supervisor_id
{where}
ORDER BY p.host, COALESCE(p.supervisor_id, p.id), p.kind DESC, p.slot, p.id
"""
#: rows of processes that stopped cleanly (or were marked so by a prune) are left out
LIVE_ONLY = "WHERE p.state <> 'stopped' AND COALESCE(s.state, '') <> 'stopped'"


def fleet_sql(live_only: bool = True) -> str:
    return FLEET_SQL.format(where=LIVE_ONLY if live_only else "")


def fetch_fleet(
    conn: psycopg.Connection, live_only: bool = False
) -> list[dict[str, Any]]:
    """The fleet table's rows (see ``FLEET_SQL``), all of them by default."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(fleet_sql(live_only)).fetchall()


def count_runnable(conn: psycopg.Connection, queues: Sequence[str] | None) -> int:
    """Runnable ``todo`` jobs in our queues (capped: only "how many more")."""
    row = conn.execute(
        queries.get("count_runnable"),
        {"queues": list(queues) if queues else None},
    ).fetchone()
    return int(row[0]) if row else 0
