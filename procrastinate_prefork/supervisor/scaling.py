# A part of ``Supervisor``: its methods take ``self: Supervisor`` so that mypy
# checks them against the whole class; mypy reports such self-types of a mixin
# as "erased type of self" (misc), which is what it is meant to be here.
# mypy: disable-error-code="misc"
"""Scaling: SIGTTIN/SIGTTOU and autoscale change the target, SIGHUP starts a
new generation; on every turn the supervisor applies ``slots.plan`` (forks,
cancelled forks, retirements) to converge to them."""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING

import setproctitle

from ..child.scoreboard import State
from ..config.parsing import MAX_CHILDREN
from ..fleet import table as fleet
from . import policy, slots
from .children import Child, Phase
from .signals import KILL_MARGIN

if TYPE_CHECKING:
    from .arbiter import Supervisor

logger = logging.getLogger("procrastinate_prefork.supervisor")


class Scaling:
    """Sizes, generations and retirements (a part of ``Supervisor``)."""

    def _planned(self: Supervisor) -> int:
        """Children of the current generation that stay, plus pending forks."""
        staying = sum(
            1
            for c in self.children.values()
            if c.generation == self.generation and not c.retiring
        )
        return staying + len(self.respawn_at)

    def _free_slot(self: Supervisor) -> int:
        used = {c.slot for c in self.children.values()} | set(self.respawn_at)
        return slots.free_slot(used, limit=2 * MAX_CHILDREN)

    def _grow(self: Supervisor, count: int = 1, why: str = "SIGTTIN") -> None:
        count = min(count, MAX_CHILDREN - self.concurrency)
        for _ in range(count):
            self.concurrency += 1
            self.respawn_at[self._free_slot()] = 0.0
        logger.info(
            "%s: %d children now",
            why,
            self.concurrency,
            extra={"action": "scale_up", "children": self.concurrency},
        )
        setproctitle.setproctitle(self._title())

    def _shrink(
        self: Supervisor, why: str = "SIGTTOU", only_idle: bool = False
    ) -> None:
        if self.concurrency <= 1:
            logger.info("%s: already at one child", why)
            return
        if only_idle and not any(
            c.generation == self.generation
            and not c.retiring
            and self.scoreboard.read(c.slot).state is State.IDLE
            for c in self.children.values()
        ):
            return
        # ``_converge`` drops a pending fork or retires a child (one not ready
        # yet, else an idle one, the highest slot), whatever else is going on.
        self.concurrency -= 1
        logger.info(
            "%s: %d children now",
            why,
            self.concurrency,
            extra={"action": "scale_down", "children": self.concurrency},
        )
        setproctitle.setproctitle(self._title())

    def _retire(self: Supervisor, child: Child, why: str) -> None:
        """Stop a child for good: it finishes its jobs and is not replaced."""
        child.retiring = True
        deadline = self.config.shutdown_graceful_timeout + KILL_MARGIN
        child.kill = child.kill.schedule(
            self.system.monotonic() + deadline, f"retirement deadline passed ({why})"
        )
        self._kill(child, signal.SIGTERM)

    def _rolling_restart(self: Supervisor) -> None:
        # Only a new generation: ``_scale`` forks it and retires the older
        # ones as it gets ready. A SIGHUP during a hand-over thereby restarts
        # it rather than stacking another one.
        self.generation += 1
        logger.info(
            "SIGHUP: rolling restart of %d children (new ones first)",
            self.concurrency,
            extra={"action": "rolling_restart", "generation": self.generation},
        )

    def _scale(self: Supervisor) -> None:
        """Converge to the target (hand-overs, sizes), then autoscale."""
        if self.phase is not Phase.RUNNING:
            return
        self._converge()
        self._autoscale()
        self._converge()

    def _converge(self: Supervisor) -> None:
        members = []
        for child in self.children.values():
            state = self.scoreboard.read(child.slot).state
            members.append(
                slots.Member(
                    pid=child.pid,
                    slot=child.slot,
                    generation=child.generation,
                    retiring=child.retiring,
                    ready=state in (State.IDLE, State.BUSY),
                    busy=state is State.BUSY,
                )
            )
        plan = slots.plan(
            members,
            target=self.concurrency,
            generation=self.generation,
            pending=len(self.respawn_at),
            refill=self.config.wait,
        )
        for _ in range(plan.fork):
            self.respawn_at[self._free_slot()] = 0.0
        for _ in range(plan.cancel):
            del self.respawn_at[max(self.respawn_at)]
        for pid in plan.retire:
            child = self.children[pid]
            self._retire(
                child,
                "rolling restart"
                if child.generation != self.generation
                else "scale down",
            )

    def _autoscale(self: Supervisor) -> None:
        if self.config.autoscale is None:
            return
        now = self.system.monotonic()
        if now < self._next_autoscale:
            return
        self._next_autoscale = now + 1.0

        backlog = self.db.run(
            lambda conn: fleet.count_runnable(conn, self.config.queues)
        )
        if backlog is None:
            return
        views = [
            self.scoreboard.read(c.slot)
            for c in self.children.values()
            if not c.retiring
        ]
        if backlog or any(v.state is State.BUSY for v in views):
            self._quiet_since = now
        low, high = self.config.autoscale
        delta = policy.autoscale_delta(
            current=self.concurrency,
            low=low,
            high=high,
            backlog=backlog,
            idle=sum(v.state is State.IDLE for v in views),
            quiet_for=now - self._quiet_since,
            cooldown=self.config.autoscale_cooldown,
        )
        if delta > 0:
            self._grow(delta, why=f"autoscale ({backlog} jobs waiting)")
        elif delta < 0:
            self._shrink(why="autoscale (idle)", only_idle=True)
            self._quiet_since = now  # one child per cool-down
