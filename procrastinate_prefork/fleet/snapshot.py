"""One snapshot of a supervisor and its children.

The supervisor takes it of itself on demand (``take``): the heartbeat writes
it to the fleet table and the probe port serves it. The status command and the
fleet health view read the table back into the same types (``from_rows``), so
the health rules judge one type wherever the facts come from.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..config.pools import DEFAULT_POOL
from ..supervisor import policy

if TYPE_CHECKING:
    from ..child.scoreboard import Scoreboard
    from ..config import PreforkConfig
    from ..supervisor.pool import Pool


@dataclasses.dataclass(frozen=True)
class ChildSnapshot:
    """One child: its scoreboard slot and the supervisor's record of it."""

    slot: int
    pid: int
    state: str  # starting, idle, busy, draining, stopped
    #: seconds since the child's own last sign of life (its scoreboard beat)
    heartbeat_age: float
    worker_id: int | None = None
    job_id: int | None = None  # the oldest running job
    task_name: str | None = None
    #: seconds since the oldest running job started (None when idle)
    job_age: float | None = None
    #: every running job, oldest first (``job_id`` is the first)
    job_ids: Sequence[int] = ()
    jobs_done: int = 0
    rss_bytes: int | None = None
    restarts: int = 0
    started_at: datetime.datetime | None = None
    uptime: float = 0.0
    #: the child's last sign of life by the database's clock (fleet table only)
    last_heartbeat: datetime.datetime | None = None
    #: seconds since its supervisor last wrote its row (fleet table only): the
    #: age of what the row shows
    as_of_age: float = 0.0
    #: the pool it belongs to (``default`` in a fleet without pools)
    pool: str = DEFAULT_POOL


@dataclasses.dataclass(frozen=True)
class PoolSnapshot:
    """One pool of a supervisor: its name, queues and size."""

    name: str
    queues: Sequence[str] | None
    concurrency: int  # children it means to run now
    crash_looping: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "queues": list(self.queues) if self.queues is not None else None,
            "concurrency": self.concurrency,
            "crash_loop": self.crash_looping,
        }

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> PoolSnapshot:
        queues = entry.get("queues")
        return cls(
            name=str(entry.get("name") or DEFAULT_POOL),
            queues=tuple(queues) if queues is not None else None,
            concurrency=int(entry.get("concurrency") or 0),
            crash_looping=bool(entry.get("crash_loop")),
        )


@dataclasses.dataclass(frozen=True)
class FleetSnapshot:
    """One supervisor and its children.

    The fields after ``uptime`` come from the fleet table only: a snapshot the
    supervisor takes of itself leaves them at their defaults."""

    host: str
    pid: int
    #: starting, running, draining, stopping; stopped (fleet table only)
    phase: str
    concurrency: int  # children it means to run now
    crash_looping: bool
    database_up: bool
    child_timeout: float
    children: Sequence[ChildSnapshot]
    queues: Sequence[str] | None = None
    uptime: float = 0.0
    id: int | None = None  # its row in the fleet table
    heartbeat_interval: float | None = None
    #: its --stalled-timeout, as it declared it (None: it did not)
    stalled_timeout: float | None = None
    rss_bytes: int | None = None
    restarts: int = 0
    started_at: datetime.datetime | None = None
    last_heartbeat: datetime.datetime | None = None
    #: seconds since its last heartbeat, by the database's clock
    heartbeat_age: float = 0.0
    #: seconds since it last wrote its row (its last heartbeat)
    as_of_age: float = 0.0
    #: jobs its children finished by minute (unix time // 60), recent ones
    finished_per_minute: Mapping[int, int] = dataclasses.field(default_factory=dict)
    #: its pools, in their configured order (none from a row written before
    #: pools existed: one pool of the supervisor's queues and concurrency)
    pools: Sequence[PoolSnapshot] = ()

    def pool_list(self) -> Sequence[PoolSnapshot]:
        """Its pools; the one pool of its queues and size if none is known."""
        return self.pools or (
            PoolSnapshot(
                DEFAULT_POOL, self.queues, self.concurrency, self.crash_looping
            ),
        )

    def running_jobs(self) -> tuple[tuple[Any, ...], ...]:
        """What the fleet table shows of the children between heartbeats
        (``fleet.write_jobs``): compared, never written, by the supervisor."""
        return tuple(
            (c.slot, c.pid, c.state, tuple(c.job_ids), c.jobs_done)
            for c in self.children
        )

    def fresh_worker_ids(self) -> list[int]:
        """Worker ids of the children that are not wedged: their heartbeat
        in procrastinate's table is kept fresh."""
        return [
            c.worker_id
            for c in self.children
            if c.worker_id and not policy.is_wedged(c.heartbeat_age, self.child_timeout)
        ]


def union_queues(
    queue_sets: Iterable[Sequence[str] | None],
) -> tuple[str, ...] | None:
    """The queues served by pools of ``queue_sets``: None (every queue) if
    one of them serves every queue."""
    union: dict[str, None] = {}
    for queues in queue_sets:
        if queues is None:
            return None
        union.update(dict.fromkeys(queues))
    return tuple(union)


def take(
    config: PreforkConfig,
    pools: Sequence[Pool],
    scoreboard: Scoreboard,
    *,
    pid: int,
    phase: str,
    database_up: bool,
    uptime: float,
    now: float,
) -> FleetSnapshot:
    """What a supervisor knows at ``now`` (its monotonic clock) of itself and
    its pools, from their state and the scoreboard: no I/O."""
    children = []
    for pool, child in ((p, c) for p in pools for c in p.children.values()):
        view = scoreboard.read(child.slot)
        history = pool.history.get(child.slot, policy.SlotHistory())
        children.append(
            ChildSnapshot(
                slot=child.slot,
                pid=child.pid,
                state=view.state.name.lower(),
                heartbeat_age=view.heartbeat_age(now),
                worker_id=view.worker_id,
                job_id=view.job_id,
                task_name=view.task_name,
                job_age=view.job_age(now),
                job_ids=tuple(job.job_id for job in view.jobs),
                jobs_done=view.jobs_done,
                rss_bytes=view.rss_bytes or None,
                restarts=history.restarts,
                started_at=child.started_at,
                uptime=now - child.started,
                pool=pool.name,
            )
        )
    return FleetSnapshot(
        host=config.hostname,
        pid=pid,
        phase=phase,
        concurrency=sum(pool.target for pool in pools),
        crash_looping=any(pool.crash_looping for pool in pools),
        database_up=database_up,
        # a child is wedged by its own pool's timeout; the supervisor's
        # verdict on all of them (/live) by the longest
        child_timeout=max(pool.config.child_timeout for pool in pools),
        children=tuple(children),
        queues=union_queues(pool.config.queues for pool in pools),
        uptime=uptime,
        pools=tuple(
            PoolSnapshot(pool.name, pool.config.queues, pool.target, pool.crash_looping)
            for pool in pools
        ),
    )


def from_rows(rows: Iterable[Mapping[str, Any]]) -> list[FleetSnapshot]:
    """The supervisors of fleet table rows (the columns of the named query
    ``fleet_rows``, from psycopg or Django's cursor), in the rows' order, each
    with its children; children whose supervisor is not among the rows are
    left out. Nothing is judged or filtered here: stopped rows stay."""
    rows = list(rows)
    children_of: dict[Any, list[ChildSnapshot]] = {}
    for row in rows:
        if row["kind"] == "child":
            children_of.setdefault(row["supervisor_id"], []).append(_child(row))
    return [
        _supervisor(row, children_of.get(row["id"], ()))
        for row in rows
        if row["kind"] == "supervisor"
    ]


def _supervisor(
    row: Mapping[str, Any], children: Sequence[ChildSnapshot]
) -> FleetSnapshot:
    queues = row.get("queues")
    return FleetSnapshot(
        host=row["host"],
        pid=int(row["pid"]),
        phase=row["state"],
        # NULL only in a row no supervisor wrote
        concurrency=int(row.get("concurrency") or 0),
        crash_looping=bool(row.get("crash_loop")),
        # The table records neither: a row was written through the database,
        # and no child of it is judged wedged from the table.
        database_up=True,
        child_timeout=math.inf,
        children=tuple(children),
        queues=tuple(queues) if queues is not None else None,
        uptime=float(row["uptime"]),
        id=int(row["id"]),
        heartbeat_interval=_float(row.get("heartbeat_interval")),
        stalled_timeout=_float(row.get("stalled_timeout")),
        rss_bytes=_int(row.get("rss_bytes")),
        restarts=int(row.get("restarts") or 0),
        started_at=row.get("started_at"),
        last_heartbeat=row.get("last_heartbeat"),
        heartbeat_age=float(row["heartbeat_age"]),
        as_of_age=_as_of(row),
        finished_per_minute={
            int(minute): int(n)
            for minute, n in _json(row.get("finished_per_minute")).items()
        },
        pools=tuple(PoolSnapshot.from_dict(p) for p in _json_list(row.get("pools"))),
    )


def _as_of(row: Mapping[str, Any]) -> float:
    value = row.get("as_of_age")
    return float(row["heartbeat_age"]) if value is None else float(value)


def _json(value: Any) -> dict[str, Any]:
    """A jsonb value: decoded by psycopg, a string through Django's cursor."""
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


def _json_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, list) else []


def _child(row: Mapping[str, Any]) -> ChildSnapshot:
    return ChildSnapshot(
        slot=int(row["slot"]),
        pid=int(row["pid"]),
        state=row["state"],
        heartbeat_age=float(row["heartbeat_age"]),
        worker_id=_int(row.get("worker_id")),
        job_id=_int(row.get("job_id")),
        task_name=row.get("task_name"),
        job_age=_float(row.get("job_age")),
        job_ids=tuple(row.get("job_ids") or ()),
        jobs_done=int(row.get("jobs_done") or 0),
        rss_bytes=_int(row.get("rss_bytes")),
        restarts=int(row.get("restarts") or 0),
        started_at=row.get("started_at"),
        uptime=float(row["uptime"]),
        last_heartbeat=row.get("last_heartbeat"),
        as_of_age=_as_of(row),
        pool=row.get("pool") or DEFAULT_POOL,
    )


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
