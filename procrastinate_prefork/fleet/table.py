"""The fleet table: one row per supervisor and per child slot.

The supervisor writes its own row and all its children's rows, and refreshes
its live children's procrastinate worker heartbeats, in one statement per
interval over its one session. procrastinate's own worker heartbeat stops
while a worker drains; ours does not, so a long job on a live child never
looks stalled to a sweeper.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import psutil
import psycopg
from psycopg.rows import dict_row

from . import events, queries
from .identity import ProcessIdentity
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
    "pool",
)


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


def heartbeat(
    conn: psycopg.Connection,
    *,
    supervisor_id: int,
    snapshot: FleetSnapshot,
    per_minute: Mapping[int, int] | None = None,
) -> None:
    """Write ``snapshot``: the supervisor's row, its children's rows, and the
    heartbeats of its children's procrastinate workers that are not wedged;
    with ``per_minute``, the jobs finished in each of the last minutes."""
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
        queries.get("heartbeat"),
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
            "finished_per_minute": json.dumps(
                {str(minute): n for minute, n in sorted((per_minute or {}).items())}
            ),
            "pools": json.dumps([pool.as_dict() for pool in snapshot.pool_list()]),
        },
    )


#: what a write of the running jobs (``write_jobs``) sets of each child
JOB_ROW_FIELDS = ("slot", "pid", "state", "job_id", "task_name", "jobs_done", "job_age")


def write_jobs(
    conn: psycopg.Connection, *, supervisor_id: int, snapshot: FleetSnapshot
) -> None:
    """Write the children's running jobs as ``snapshot`` has them, between
    heartbeats: the rows that changed, and the rows of slots with no child
    left, stopped. Neither the heartbeat times nor procrastinate's worker
    heartbeats: those prove that processes live, and only the heartbeat
    writes them."""
    payload = []
    for child in snapshot.children:
        row = {name: getattr(child, name) for name in JOB_ROW_FIELDS}
        row["job_ids"] = list(child.job_ids)
        payload.append(row)
    conn.execute(
        queries.get("write_jobs"),
        {
            "supervisor_id": supervisor_id,
            "children": json.dumps(payload),
            "live_slots": [child.slot for child in snapshot.children],
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
    rows of those silent for longer than ``retention``, and the oldest
    events past ``events.EVENTS_KEPT``. Leaderless: one pruner
    at a time, others skip."""
    with conn.transaction():
        locked = conn.execute(
            queries.get("try_xact_lock"), {"key": PRUNE_LOCK_KEY}
        ).fetchone()
        if not locked or not locked[0]:
            return 0
        conn.execute(queries.get("mark_gone_supervisors"), dict(judgement))
        deleted = conn.execute(
            queries.get("delete_silent_supervisors"),
            [retention],
        )
        events.trim(conn)
        return deleted.rowcount


def fetch_fleet(
    conn: psycopg.Connection, live_only: bool = False
) -> list[dict[str, Any]]:
    """The fleet table's rows (query ``fleet_rows``), all of them by default."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            queries.get("fleet_rows"), {"live_only": live_only}
        ).fetchall()


def queue_jobs(
    conn: psycopg.Connection, *, supervisor_id: int, interval: float
) -> tuple[list[tuple[str, str, int]], float, bool] | None:
    """The queue depth metric's ``(queue, status, count)`` rows, their age in
    seconds, and whether this call counted them (query ``queue_jobs``: one
    supervisor counts for the fleet per ``interval``); None before any count."""
    row = conn.execute(
        queries.get("queue_jobs"),
        {"supervisor_id": supervisor_id, "interval": interval},
    ).fetchone()
    if row is None:
        return None
    published, age, counted = row
    if isinstance(published, str):
        published = json.loads(published)
    rows = [(str(q), str(s), int(n)) for q, s, n in published]
    return rows, float(age), bool(counted)


def count_runnable(conn: psycopg.Connection, queues: Sequence[str] | None) -> int:
    """Runnable ``todo`` jobs in our queues (capped: only "how many more")."""
    if queues:
        # planned for these queues at every call, never prepared: a generic
        # plan cannot tell a queue with many todo jobs from one with none and
        # walks every todo job of the other queues (once a second)
        cursor = conn.execute(
            queries.get("count_runnable_in_queues"),
            {"queues": list(queues)},
            prepare=False,
        )
    else:
        cursor = conn.execute(queries.get("count_runnable"))
    row = cursor.fetchone()
    return int(row[0]) if row else 0
