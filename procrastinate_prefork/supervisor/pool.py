"""A pool: the children of one set of slots, their history and the forks to
come, and the size it converges to.

It owns what it changes: its children, each slot's history, the respawn
times, the generation (bumped by SIGHUP) and the target size. It is given
the clock and ``kill`` (a ``System``), the scoreboard its children write and
``fork``, which makes one child of a slot and generation. A second ``Pool``
of the same supervisor would be a second pool of children; nothing here
knows of the supervisor: each pool of a supervisor has its own
configuration (``config.pools``), name and range of scoreboard slots.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

from ..child import wakepipe
from ..child.scoreboard import Scoreboard, State
from ..config import PreforkConfig
from ..config.parsing import MAX_CHILDREN
from ..config.pools import DEFAULT_POOL
from . import policy, slots
from .children import Child
from .system import System

logger = logging.getLogger("procrastinate_prefork.supervisor")

KILL_MARGIN = 1.0  # after a drain or retirement deadline, before SIGKILL
#: scoreboard slots of each pool: its children, and as many again during a
#: rolling restart's hand-over
SLOTS_PER_POOL = 2 * MAX_CHILDREN


class ForkFailed(Exception):
    """A fork failed at start: the fleet cannot start."""

    def __init__(self, slot: int, error: OSError):
        super().__init__(str(error))
        self.slot = slot


class Pool:
    def __init__(
        self,
        config: PreforkConfig,
        system: System,
        scoreboard: Scoreboard,
        fork: Callable[[int, int], Child],
        *,
        name: str = DEFAULT_POOL,
        slot_range: range = range(SLOTS_PER_POOL),
    ):
        self.config = config
        self.name = name
        self.slots = slot_range  # its own slots of the scoreboard
        self.system = system
        self.scoreboard = scoreboard
        self.fork = fork  # (slot, generation) -> the forked child
        #: children wanted now: --concurrency, or autoscale's low end at first
        self.target: int = (
            config.autoscale[0] if config.autoscale else config.concurrency
        )
        self.generation: int = 0
        self.children: dict[int, Child] = {}  # by pid
        self.history: dict[int, policy.SlotHistory] = {}  # by slot
        self.respawn_at: dict[int, float] = {}  # slot -> monotonic time
        self.crash_looping: bool = False
        self.ready_logged: bool = False

    def start(self) -> None:
        for slot in self.slots[: self.target]:
            self.respawn_at[slot] = 0.0

    # --- forks -------------------------------------------------------------

    def due(self, now: float) -> list[int]:
        return sorted(slot for slot, when in self.respawn_at.items() if when <= now)

    def spawn(self, due: list[int], now: float, *, at_start: bool = False) -> None:
        """Fork the children of ``due``; a failed fork is retried a second
        later (at start, it raises ``ForkFailed``)."""
        for slot in due:
            try:
                child = self.fork(slot, self.generation)
            except OSError as exc:
                if at_start:
                    raise ForkFailed(slot, exc) from None
                logger.error(
                    "Cannot fork child %s: %s; retrying",
                    slot,
                    exc,
                    extra={"action": "fork_failed", "slot": slot, "pool": self.name},
                )
                self.respawn_at[slot] = now + 1.0
                break
            self.children[child.pid] = child
            del self.respawn_at[slot]

    def next_fork_in(self, now: float) -> float | None:
        if not self.respawn_at:
            return None
        return max(0.0, min(self.respawn_at.values()) - now)

    def pop(self, pid: int) -> Child | None:
        return self.children.pop(pid, None)

    # --- deaths ------------------------------------------------------------

    def replace(
        self,
        child: Child,
        code: int | None,
        now: float,
        *,
        had_job: bool,
        running: bool,
    ) -> None:
        """After a death: re-fork its slot, with backoff, or not at all."""
        if not policy.should_replace(code, self.config.wait, not running):
            return
        if child.retiring:
            return
        # An older generation hands over to the current one, which the plan
        # forks, except in one-shot mode: there it forks none, and the child
        # left early, so its slot needs one here.
        if self.config.wait and child.generation != self.generation:
            return
        if self.planned() >= self.target:
            return  # scaled down meanwhile
        clean = code in (0, policy.EXIT_RECYCLE, policy.EXIT_QUEUES_EMPTY)
        history = policy.record_death(
            self.history.get(child.slot, policy.SlotHistory()),
            now - child.started,
            clean,
            had_job=had_job,
        )
        self.history[child.slot] = history
        delay = policy.restart_delay(history, cap=self.config.restart_backoff_max)
        self.respawn_at[child.slot] = now + delay
        if delay:
            logger.info(
                "Re-forking slot %s in %.1f s",
                child.slot,
                delay,
                extra={
                    "action": "respawn_backoff",
                    "slot": child.slot,
                    "pool": self.name,
                },
            )
        self._update_crash_loop()

    def _update_crash_loop(self) -> None:
        looping = [s for s, h in self.history.items() if policy.is_crash_looping(h)]
        if looping and not self.crash_looping:
            logger.error(
                "CRASH LOOP: slot(s) %s (pool %s) died within %g s of start %d "
                "times in a row; re-forking with backoff (check the logs above "
                "for the cause)",
                ", ".join(map(str, looping)),
                self.name,
                policy.MIN_UPTIME,
                policy.CRASH_LOOP_THRESHOLD,
                extra={"action": "crash_loop", "pool": self.name},
            )
        elif not looping and self.crash_looping:
            logger.warning(
                "Crash loop over (pool %s)",
                self.name,
                extra={"action": "crash_loop_over", "pool": self.name},
            )
        self.crash_looping = bool(looping)

    # --- the periodic deferrer ---------------------------------------------

    def designate_deferrer(self) -> None:
        """One child per host runs procrastinate's periodic deferrer (each
        would defer the same jobs, deduplicated by the database): the one
        named in the scoreboard, which its children read. A child that dies,
        drains or retires hands it on to the lowest slot of the others."""
        able = (State.STARTING, State.IDLE, State.BUSY)
        candidates = [
            (c.slot, c.pid)
            for c in self.children.values()
            if not c.retiring and self.scoreboard.read(c.slot).state in able
        ]
        current = self.scoreboard.deferrer()
        chosen = policy.pick_deferrer(current, candidates)
        if chosen == current:
            return
        self.scoreboard.set_deferrer(chosen)
        slot = next((s for s, pid in candidates if pid == chosen), None)
        logger.debug(
            "Child %s runs the periodic deferrer",
            slot,
            extra={
                "action": "periodic_deferrer_designated",
                "slot": slot,
                "pid": chosen,
            },
        )

    # --- signals to children -----------------------------------------------

    def kill(self, child: Child, signum: int) -> None:
        try:
            self.system.kill(child.pid, signum)
        except ProcessLookupError:
            pass

    def wake(self, data: bytes) -> None:
        """Write ``data`` to every child's wake-up pipe."""
        for child in self.children.values():
            wakepipe.send_wake(child.wake_fd, data)
        logger.debug(
            "Woke the %d child(ren) of pool %s",
            len(self.children),
            self.name,
            extra={
                "action": "wake_forwarded",
                "pool": self.name,
                "pids": sorted(self.children),
            },
        )

    def idle_children(self) -> list[Child]:
        """Children with room for a job (idle; with several jobs at once, a
        free place), lowest slot first: those a poll wakes."""
        room = []
        for child in sorted(self.children.values(), key=lambda c: c.slot):
            view = self.scoreboard.read(child.slot)
            if child.retiring:
                continue
            if view.state is State.IDLE or (
                view.state is State.BUSY
                and view.running < self.config.child_concurrency
                and self.config.child_concurrency > 1
            ):
                room.append(child)
        return room

    def wake_children(self, children: list[Child]) -> list[int]:
        """A "job inserted" wake-up to these children only; their pids."""
        data = wakepipe.encode([wakepipe.JOB_INSERTED])
        for child in children:
            wakepipe.send_wake(child.wake_fd, data)
        return [child.pid for child in children]

    def signal_all(self, signum: int) -> None:
        for child in self.children.values():
            self.kill(child, signum)

    def drain(self, deadline: float) -> None:
        """SIGTERM to every child, SIGKILL to those left past ``deadline``."""
        self.respawn_at.clear()
        for child in self.children.values():
            self.kill(child, signal.SIGTERM)
            child.kill = child.kill.schedule(
                deadline + KILL_MARGIN, "shutdown deadline passed"
            )

    def stop_now(self) -> None:
        self.respawn_at.clear()
        for child in self.children.values():
            child.kill = child.kill.blame(child.kill.reason or "immediate stop")
            self.kill(child, signal.SIGKILL)

    # --- size --------------------------------------------------------------

    def planned(self) -> int:
        """Children of the current generation that stay, plus pending forks."""
        staying = sum(
            1
            for c in self.children.values()
            if c.generation == self.generation and not c.retiring
        )
        return staying + len(self.respawn_at)

    def _free_slot(self) -> int:
        used = {c.slot for c in self.children.values()} | set(self.respawn_at)
        return slots.free_slot(used, start=self.slots.start, limit=self.slots.stop)

    def grow(self, count: int = 1, why: str = "SIGTTIN") -> None:
        count = min(count, MAX_CHILDREN - self.target)
        for _ in range(count):
            self.target += 1
            self.respawn_at[self._free_slot()] = 0.0
        logger.info(
            "%s: %d children now (pool %s)",
            why,
            self.target,
            self.name,
            extra={"action": "scale_up", "children": self.target, "pool": self.name},
        )

    def shrink(self, why: str = "SIGTTOU", only_idle: bool = False) -> None:
        if self.target <= 1:
            logger.info("%s: already at one child", why)
            return
        if only_idle and not any(
            c.generation == self.generation
            and not c.retiring
            and self.scoreboard.read(c.slot).state is State.IDLE
            for c in self.children.values()
        ):
            return
        # ``converge`` drops a pending fork or retires a child (one not ready
        # yet, else an idle one, the highest slot), whatever else is going on.
        self.target -= 1
        logger.info(
            "%s: %d children now (pool %s)",
            why,
            self.target,
            self.name,
            extra={"action": "scale_down", "children": self.target, "pool": self.name},
        )

    def rolling_restart(self) -> None:
        # Only a new generation: ``converge`` forks it and retires the older
        # ones as it gets ready. A SIGHUP during a hand-over thereby restarts
        # it rather than stacking another one.
        self.generation += 1
        logger.info(
            "SIGHUP: rolling restart of %d children of pool %s (new ones first)",
            self.target,
            self.name,
            extra={
                "action": "rolling_restart",
                "generation": self.generation,
                "pool": self.name,
            },
        )

    def _retire(self, child: Child, why: str) -> None:
        """Stop a child for good: it finishes its jobs and is not replaced."""
        child.retiring = True
        deadline = self.config.shutdown_graceful_timeout + KILL_MARGIN
        child.kill = child.kill.schedule(
            self.system.monotonic() + deadline, f"retirement deadline passed ({why})"
        )
        self.kill(child, signal.SIGTERM)

    def converge(self) -> None:
        """Apply ``slots.plan``: forks to add or drop, children to retire."""
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
            target=self.target,
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

    def ready(self) -> bool:
        """Every child of the target is ready (idle or busy)."""
        states = [self.scoreboard.read(c.slot).state for c in self.children.values()]
        ready = all(s in (State.IDLE, State.BUSY) for s in states)
        return len(states) == self.target and ready
