"""Reaping: a dead child's exit is logged and counted, its jobs queued for
recovery, its death told to the live page and to the user's hook; its pool
then decides whether the slot is re-forked.

The reaper owns nothing: it is given ``waitpid`` (a ``System``), the
scoreboard, the recovery queue, the totals, the outbox and the hook, and is
shown the pools whose children it reaps."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from ..child.scoreboard import Scoreboard
from ..fleet import events
from ..observability import liveprobe, metrics
from . import policy
from .children import Child
from .pool import Pool
from .recovering import Outbox, PendingRecovery, Recovery
from .system import System

logger = logging.getLogger("procrastinate_prefork.supervisor")


def probe_exited(live_probe: liveprobe.LiveProbe, status: int) -> None:
    """The process answering /live died: another one takes over."""
    _, _, text = policy.describe_exit(status)
    logger.error(
        "The probe process %s; starting another",
        text,
        extra={"action": "probe_restarted"},
    )
    try:
        live_probe.start()
    except OSError:  # the supervisor answers /live itself meanwhile
        live_probe.pid = None


class Reaper:
    def __init__(
        self,
        system: System,
        scoreboard: Scoreboard,
        recovery: Recovery,
        totals: metrics.Totals,
        outbox: Outbox,
        on_child_exit: Callable[..., Any] | None = None,
    ):
        self.system = system
        self.scoreboard = scoreboard
        self.recovery = recovery
        self.totals = totals
        self.outbox = outbox
        self.on_child_exit = on_child_exit

    def reap(self, pools: Sequence[Pool], *, running: bool) -> list[tuple[int, int]]:
        """Every dead child of the pools; the exits (pid, status) of other
        processes of the supervisor's, which no pool owns."""
        strays: list[tuple[int, int]] = []
        while True:
            try:
                pid, status = self.system.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return strays
            if pid == 0:
                return strays
            for pool in pools:
                child = pool.pop(pid)
                if child is not None:
                    self._child_exited(pool, child, status, running=running)
                    break
            else:
                strays.append((pid, status))

    def _child_exited(
        self, pool: Pool, child: Child, status: int, *, running: bool
    ) -> None:
        now = self.system.monotonic()
        code, signum, text = policy.describe_exit(status)
        view = self.scoreboard.read(child.slot)
        os.close(child.wake_fd)
        cause = child.kill.reason or text
        if child.retiring and child.kill.reason is None:
            text += " (retired)"
        clean = code in (0, policy.EXIT_RECYCLE, policy.EXIT_QUEUES_EMPTY)
        if code == policy.EXIT_RECYCLE:
            text = "recycled itself"
        elif code == policy.EXIT_QUEUES_EMPTY:
            text = "found its queues empty"
        log = logger.info if clean else logger.warning
        log(
            "Child %s (pid %s) %s%s after %.1f s, %d job(s) done",
            child.slot,
            child.pid,
            text,
            f" ({child.kill.reason})" if child.kill.reason else "",
            now - child.started,
            view.jobs_done,
            extra={
                "action": "child_exited",
                "slot": child.slot,
                "pid": child.pid,
                "exit_code": code,
                "signal": signum,
                "cause": cause,
            },
        )
        # the slot's if it shows one; else the one last seen there: a slot
        # found blank at the end must not leave the child's jobs doing
        worker_id = view.worker_id if view.worker_id is not None else child.worker_id
        if worker_id is not None:
            timed_out = set(child.timed_out_jobs)
            # Jobs killed at the shutdown deadline are not the job's fault, nor
            # are those of a child stopped for another job's time limit.
            count = not child.kill.deadline_kill and not timed_out
            self.recovery.add(
                PendingRecovery(
                    worker_id,
                    cause,
                    child.pid,
                    timed_out,
                    count_crash=count,
                    time_limit_for=pool.config.time_limit_for,
                )
            )
        metrics.drain_dead(self.scoreboard.finished, child.slot, self.totals)
        label = metrics.exit_cause(
            code,
            signum,
            timed_out=bool(child.timed_out_jobs),
            wedged=child.kill.wedged,
            killed=child.kill.reason is not None,
            retiring=child.retiring,
        )
        self.totals.exited(label)
        event = events.death_event(
            label,
            code,
            slot=child.slot,
            pid=child.pid,
            cause=cause,
            signal=signum,
            job_id=view.job_id,
            task_name=view.task_name,
            rss_bytes=view.rss_bytes or None,
        )
        if event is not None:
            self.outbox.add([event])
        self.scoreboard.clear(child.slot)
        self._call_exit_hook(child, code, signum)
        pool.replace(child, code, now, had_job=view.job_id is not None, running=running)

    def _call_exit_hook(
        self, child: Child, code: int | None, signum: int | None
    ) -> None:
        if self.on_child_exit is None:
            return
        try:
            self.on_child_exit(
                slot=child.slot, pid=child.pid, exit_code=code, signal=signum
            )
        except Exception:  # a user hook must not take the supervisor down
            logger.exception(
                "on_child_exit hook failed", extra={"action": "hook_failed"}
            )
