"""The fleet table: one row per supervisor and per child slot.

The supervisor writes its own row and all its children's rows, and refreshes
its live children's procrastinate worker heartbeats, in one statement per
interval over its one session. procrastinate's own worker heartbeat stops
while a worker drains; ours does not, so a long job on a live child never
looks stalled to a sweeper.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import psutil
import psycopg
from psycopg.rows import dict_row

#: rows of supervisors silent for this long are deleted (with their children)
DEFAULT_RETENTION = 3600.0
PRUNE_LOCK_KEY = 0x7072_6566_6F72_6C  # transaction-scoped advisory lock


@dataclasses.dataclass(frozen=True)
class ChildRow:
    slot: int
    pid: int
    worker_id: int | None
    state: str
    job_id: int | None
    task_name: str | None
    jobs_done: int
    restarts: int
    rss_bytes: int | None
    started_at: datetime.datetime
    #: seconds since the child's own last sign of life (its scoreboard beat)
    heartbeat_age: float = 0.0
    #: seconds since the current job started (None when idle)
    job_age: float | None = None


def child_runs_job(child: str, job_id: str) -> str:
    """SQL: the child row ``child`` says it runs the job ``job_id``. The one
    place that knows how a child row lists its running jobs."""
    return f"{job_id} = {child}.job_id"


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
) -> int:
    row = conn.execute(
        "INSERT INTO procrastinate_prefork_processes "
        "(kind, host, pid, state, concurrency, queues, heartbeat_interval, "
        "stalled_timeout) "
        "VALUES ('supervisor', %s, %s, 'starting', %s, %s, %s, %s) RETURNING id",
        [host, pid, concurrency, list(queues) if queues else None,
         heartbeat_interval, stalled_timeout],
    ).fetchone()
    assert row is not None
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
        started_at timestamptz, heartbeat_age float8, job_age float8)
), upserted AS (
    INSERT INTO procrastinate_prefork_processes AS p
        (kind, host, pid, supervisor_id, slot, worker_id, state, job_id, task_name,
         job_started_at, jobs_done, restarts, rss_bytes, started_at, last_heartbeat)
    SELECT 'child', %(host)s, c.pid, %(supervisor_id)s, c.slot, c.worker_id, c.state,
           c.job_id, c.task_name, now() - make_interval(secs => c.job_age),
           c.jobs_done, c.restarts, c.rss_bytes, c.started_at,
           now() - make_interval(secs => c.heartbeat_age)
    FROM children AS c WHERE EXISTS (SELECT 1 FROM supervisor)
    ON CONFLICT (supervisor_id, slot) WHERE kind = 'child' DO UPDATE SET
        pid = EXCLUDED.pid, worker_id = EXCLUDED.worker_id, state = EXCLUDED.state,
        job_id = EXCLUDED.job_id, task_name = EXCLUDED.task_name,
        job_started_at = EXCLUDED.job_started_at,
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
    worker_id = NULL
WHERE supervisor_id = %(supervisor_id)s AND kind = 'child'
  AND state <> 'stopped' AND NOT (slot = ANY(%(live_slots)s))
"""
_HEARTBEAT_SQL = _HEARTBEAT_SQL_TEMPLATE.replace(
    "{runs}", child_runs_job("c", "job.id"))


def heartbeat(
    conn: psycopg.Connection,
    *,
    supervisor_id: int,
    host: str,
    state: str,
    crash_loop: bool,
    concurrency: int,
    children: Sequence[ChildRow],
    fresh_worker_ids: Sequence[int],
) -> None:
    payload = [
        {**dataclasses.asdict(child), "started_at": child.started_at.isoformat()}
        for child in children
    ]
    try:
        rss = psutil.Process().memory_info().rss
    except psutil.Error:
        rss = None
    conn.execute(
        _HEARTBEAT_SQL,  # type: ignore[arg-type]
        {
            "worker_ids": list(fresh_worker_ids),
            "supervisor_id": supervisor_id,
            "state": state,
            "crash_loop": crash_loop,
            "concurrency": concurrency,
            "rss": rss,
            "children": json.dumps(payload),
            "host": host,
            "live_slots": [child.slot for child in children],
        },
    )


def mark_stopped(conn: psycopg.Connection, supervisor_id: int) -> None:
    # worker_id stays: if a dead child's jobs could not be recovered (database
    # down), the sweep still judges its worker by this supervisor's timeout
    conn.execute(
        "UPDATE procrastinate_prefork_processes "
        "SET state = 'stopped', job_id = NULL, task_name = NULL, "
        "job_started_at = NULL, last_heartbeat = now() "
        "WHERE id = %s OR supervisor_id = %s",
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
            "SELECT pg_try_advisory_xact_lock(%(key)s)", {"key": PRUNE_LOCK_KEY}
        ).fetchone()
        if not locked or not locked[0]:
            return 0
        conn.execute(
            "UPDATE procrastinate_prefork_processes AS p "  # noqa: S608
            "SET state = 'stopped', "
            "job_id = NULL, task_name = NULL, job_started_at = NULL "
            "FROM procrastinate_prefork_processes AS s "
            "WHERE s.id = COALESCE(p.supervisor_id, p.id) AND p.state <> 'stopped' "
            f"AND {supervisor_dead('s')}",
            dict(judgement),
        )
        deleted = conn.execute(
            "DELETE FROM procrastinate_prefork_processes "
            "WHERE kind = 'supervisor' AND last_heartbeat < now() - make_interval(secs => %s)",
            [retention],
        )
        return deleted.rowcount


def process_is_gone(pid: int, started_at: datetime.datetime) -> bool:
    """Whether the process recorded as ``pid`` started at ``started_at`` is
    dead: no such pid, or the pid now belongs to a process started later."""
    try:
        created = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False
    return created > started_at.timestamp() + 2.0


def dead_predecessors(
    conn: psycopg.Connection, *, host: str, own_id: int
) -> list[dict[str, Any]]:
    """Supervisors recorded on this host, not stopped, whose process is gone,
    with the worker ids of their children."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT s.id, s.pid, s.started_at, "
            "  COALESCE(array_agg(c.worker_id) FILTER (WHERE c.worker_id IS NOT NULL),"
            "           '{}') AS worker_ids "
            "FROM procrastinate_prefork_processes AS s "
            "LEFT JOIN procrastinate_prefork_processes AS c ON c.supervisor_id = s.id "
            "WHERE s.kind = 'supervisor' AND s.host = %s AND s.id <> %s "
            "  AND s.state <> 'stopped' "
            "GROUP BY s.id",
            [host, own_id],
        ).fetchall()
    own_pid = os.getpid()
    return [
        row for row in rows
        if (row["pid"] == own_pid or process_is_gone(row["pid"], row["started_at"]))
    ]


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


def fetch_fleet(conn: psycopg.Connection, live_only: bool = False) -> list[dict[str, Any]]:
    """The fleet table's rows (see ``FLEET_SQL``), all of them by default."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(fleet_sql(live_only)).fetchall()  # type: ignore[arg-type]
