"""One child as the supervisor sees it, and the fork that makes one."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import enum
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from ..child.bootstrap import Bootstrap
from ..child.forked import child_main
from ..child.runner import ChildSpec
from ..child.scoreboard import Scoreboard
from ..config import PreforkConfig
from ..config.pools import DEFAULT_POOL
from .system import System

logger = logging.getLogger("procrastinate_prefork.supervisor")


class Phase(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"
    STOPPING = "stopping"


@dataclasses.dataclass(frozen=True)
class PendingKill:
    """Why and when the supervisor kills a child, if it does."""

    reason: str | None = None  # why we killed it, once we have
    at: float | None = None  # SIGKILL when this monotonic time passes...
    why: str = ""  # ...and this is why
    #: killed at a drain/retire deadline: not the job's fault
    deadline_kill: bool = False
    #: killed for showing no sign of life (``--child-timeout``)
    wedged: bool = False

    def schedule(self, at: float, why: str) -> PendingKill:
        return dataclasses.replace(self, at=at, why=why)

    def blame(self, reason: str, *, wedged: bool = False) -> PendingKill:
        return dataclasses.replace(self, reason=reason, wedged=wedged)

    def due(self, now: float) -> bool:
        return self.at is not None and now >= self.at

    def fire(self) -> PendingKill:
        """The scheduled SIGKILL goes out: its ``why`` is the reason unless
        the child was already being killed for one."""
        if self.reason is not None:
            return dataclasses.replace(self, at=None)
        return PendingKill(reason=self.why, at=None, why=self.why, deadline_kill=True)


@dataclasses.dataclass
class Child:
    slot: int
    pid: int
    started: float  # monotonic
    started_at: datetime.datetime
    wake_fd: int
    kill: PendingKill = PendingKill()
    #: its jobs that ran past their time limit (the child was stopped for them)
    timed_out_jobs: set[int] = dataclasses.field(default_factory=set)
    generation: int = 0  # bumped by SIGHUP: older children are rolled over
    #: its procrastinate worker id as last seen in its slot: what its jobs are
    #: recovered by even if the slot no longer shows it when the child dies
    worker_id: int | None = None
    retiring: bool = False  # asked to stop for good (scale down, rolling restart)


def fork_child(
    system: System,
    slot: int,
    *,
    scoreboard: Scoreboard,
    generation: int,
    spec: Callable[[int], ChildSpec],
    pool: str = DEFAULT_POOL,
) -> Child:
    """Fork the child of ``slot``; ``spec`` makes its ``ChildSpec`` from the
    read end of its wake-up pipe (in the child, which never returns)."""
    wake_r, wake_w = os.pipe()
    scoreboard.reset(slot)
    # What our buffers hold would be written again by the child when it exits.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        pid = system.fork()
    except OSError:
        os.close(wake_r)
        os.close(wake_w)
        raise
    if pid == 0:  # in the child: never returns, whatever it meets
        child_main(lambda: spec(wake_r), wake_w)
    os.close(wake_r)
    os.set_blocking(wake_w, False)
    scoreboard.set_pid(slot, pid)
    logger.info(
        "Child %s of pool %s started (pid %s)",
        slot,
        pool,
        pid,
        extra={"action": "child_started", "slot": slot, "pid": pid, "pool": pool},
    )
    return Child(
        slot=slot,
        pid=pid,
        started=system.monotonic(),
        started_at=system.now(),
        wake_fd=wake_w,
        generation=generation,
    )


@dataclasses.dataclass
class Forker:
    """Forks the child of a slot with what every child of a pool is given
    (its pool's configuration and name): called by the pool as
    ``fork(slot, generation)``."""

    system: System
    config: PreforkConfig
    bootstrap: Bootstrap
    scoreboard: Scoreboard
    supervisor_pid: int
    #: the supervisor's descriptors a child closes (read in the child)
    own_fds: Callable[[], list[int]]
    on_start: Callable[..., Any] | None = None
    #: the supervisor's row in the fleet table, once registered
    supervisor_row: Callable[[], int | None] = lambda: None
    pool: str = DEFAULT_POOL

    def __call__(self, slot: int, generation: int) -> Child:
        def spec(wake_r: int) -> ChildSpec:
            return ChildSpec(
                slot=slot,
                config=self.config,
                bootstrap=self.bootstrap,
                scoreboard=self.scoreboard,
                wake_fd=wake_r,  # the supervisor's polls wake it too
                supervisor_pid=self.supervisor_pid,
                inherited_fds=self.own_fds(),
                on_start=self.on_start,
                supervisor_row=self.supervisor_row(),
                pool=self.pool,
            )

        return fork_child(
            self.system,
            slot,
            scoreboard=self.scoreboard,
            generation=generation,
            spec=spec,
            pool=self.pool,
        )
