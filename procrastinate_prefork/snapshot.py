"""One snapshot of a supervisor and its children, taken on demand.

The heartbeat writes it to the fleet table, the probe port serves it and the
health rules judge it: one type for what used to be built three times.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import policy

if TYPE_CHECKING:
    from .supervisor import Supervisor


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


@dataclasses.dataclass(frozen=True)
class FleetSnapshot:
    """One supervisor and its children."""

    host: str
    pid: int
    phase: str  # running, draining, stopping
    concurrency: int  # children it means to run now
    crash_looping: bool
    database_up: bool
    child_timeout: float
    children: Sequence[ChildSnapshot]
    queues: Sequence[str] | None = None
    uptime: float = 0.0

    def fresh_worker_ids(self) -> list[int]:
        """Worker ids of the children that are not wedged: their heartbeat
        in procrastinate's table is kept fresh."""
        return [
            c.worker_id
            for c in self.children
            if c.worker_id and not policy.is_wedged(c.heartbeat_age, self.child_timeout)
        ]


def take(supervisor: Supervisor, now: float) -> FleetSnapshot:
    """What ``supervisor`` knows at ``now`` (its monotonic clock), from its
    own state and its scoreboard: no I/O."""
    children = []
    for child in supervisor.children.values():
        view = supervisor.scoreboard.read(child.slot)
        history = supervisor.history.get(child.slot, policy.SlotHistory())
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
            )
        )
    config = supervisor.config
    return FleetSnapshot(
        host=config.hostname,
        pid=supervisor.pid,
        phase=supervisor.phase.value,
        concurrency=supervisor.concurrency,
        crash_looping=supervisor.crash_looping,
        database_up=supervisor.db.is_up,
        child_timeout=config.child_timeout,
        children=tuple(children),
        queues=config.queues,
        uptime=now - supervisor.started,
    )
