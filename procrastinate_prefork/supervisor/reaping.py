# A part of ``Supervisor``: its methods take ``self: Supervisor`` so that mypy
# checks them against the whole class; mypy reports such self-types of a mixin
# as "erased type of self" (misc), which is what it is meant to be here.
# mypy: disable-error-code="misc"
"""Reaping: a dead child's exit is logged, its jobs queued for recovery, its
slot re-forked with backoff (or not), and a crash loop told."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from ..fleet import events
from ..observability import metrics
from . import policy
from .children import Child, Phase
from .maintenance import PendingRecovery

if TYPE_CHECKING:
    from .arbiter import Supervisor

logger = logging.getLogger("procrastinate_prefork.supervisor")


class Reaping:
    """What follows a child's death (a part of ``Supervisor``)."""

    def _reap(self: Supervisor) -> None:
        while True:
            try:
                pid, status = self.system.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self._child_exited(child, status)
            elif self.live_probe is not None and pid == self.live_probe.pid:
                self._probe_exited(status)

    def _probe_exited(self: Supervisor, status: int) -> None:
        assert self.live_probe is not None  # noqa: S101 - its pid matched
        _, _, text = policy.describe_exit(status)
        logger.error(
            "The probe process %s; starting another",
            text,
            extra={"action": "probe_restarted"},
        )
        try:
            self.live_probe.start()
        except OSError:  # the supervisor answers /live itself meanwhile
            self.live_probe.pid = None

    def _child_exited(self: Supervisor, child: Child, status: int) -> None:
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
        if view.worker_id is not None:
            timed_out = set(child.timed_out_jobs)
            # Jobs killed at the shutdown deadline are not the job's fault, nor
            # are those of a child stopped for another job's time limit.
            count = not child.kill.deadline_kill and not timed_out
            self.unrecovered.append(
                PendingRecovery(
                    view.worker_id, cause, child.pid, timed_out, count_crash=count
                )
            )
            self._recover_pending()
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
            self.events_pending = events.keep(self.events_pending, [event])
        self.scoreboard.clear(child.slot)
        self._call_exit_hook(child, code, signum)
        if not policy.should_replace(
            code, self.config.wait, self.phase is not Phase.RUNNING
        ):
            return
        if child.retiring:
            return
        # An older generation hands over to the current one, which the plan
        # forks, except in one-shot mode: there it forks none, and the child
        # left early, so its slot needs one here.
        if self.config.wait and child.generation != self.generation:
            return
        if self._planned() >= self.concurrency:
            return  # scaled down meanwhile
        history = policy.record_death(
            self.history.get(child.slot, policy.SlotHistory()),
            now - child.started,
            clean,
            had_job=view.job_id is not None,
        )
        self.history[child.slot] = history
        delay = policy.restart_delay(history, cap=self.config.restart_backoff_max)
        self.respawn_at[child.slot] = now + delay
        if delay:
            logger.info(
                "Re-forking slot %s in %.1f s",
                child.slot,
                delay,
                extra={"action": "respawn_backoff", "slot": child.slot},
            )
        self._update_crash_loop()

    def _update_crash_loop(self: Supervisor) -> None:
        looping = [s for s, h in self.history.items() if policy.is_crash_looping(h)]
        if looping and not self.crash_looping:
            logger.error(
                "CRASH LOOP: slot(s) %s died within %g s of start %d times in a row; "
                "re-forking with backoff (check the logs above for the cause)",
                ", ".join(map(str, looping)),
                policy.MIN_UPTIME,
                policy.CRASH_LOOP_THRESHOLD,
                extra={"action": "crash_loop"},
            )
        elif not looping and self.crash_looping:
            logger.warning("Crash loop over", extra={"action": "crash_loop_over"})
        self.crash_looping = bool(looping)

    def _call_exit_hook(
        self: Supervisor, child: Child, code: int | None, signum: int | None
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
