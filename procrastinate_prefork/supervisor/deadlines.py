"""The police: SIGKILL when a scheduled kill falls due, when a child is
wedged, and SIGTERM then SIGKILL for a job past its time limit.

It owns nothing: it reads the scoreboard and changes only the kill plans
(``Child.kill``, ``Child.timed_out_jobs``) of the children it is shown, and
notes the worker id each one's slot shows (``Child.worker_id``, for the
reaper); ``kill`` sends the signals."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterable

from ..child.scoreboard import RunningJob, Scoreboard
from ..config import PreforkConfig
from . import policy
from .children import Child

logger = logging.getLogger("procrastinate_prefork.supervisor")

TIME_LIMIT_GRACE = 2.0  # between SIGTERM and SIGKILL of a child past its time limit


class Police:
    def __init__(
        self,
        config: PreforkConfig,
        scoreboard: Scoreboard,
        kill: Callable[[Child, int], None],
    ):
        self.config = config
        self.scoreboard = scoreboard
        self.kill = kill

    def patrol(self, children: Iterable[Child], now: float) -> None:
        for child in list(children):
            view = self.scoreboard.read(child.slot)
            if view.worker_id is not None:
                child.worker_id = view.worker_id
            age = view.heartbeat_age(now)
            if child.kill.due(now):
                child.kill = child.kill.fire()
                logger.warning(
                    "Child %s (pid %s): %s, SIGKILL",
                    child.slot,
                    child.pid,
                    child.kill.reason,
                    extra={"action": "child_killed"},
                )
                self.kill(child, signal.SIGKILL)
            elif child.kill.reason is None and policy.is_wedged(
                age, self.config.child_timeout
            ):
                child.kill = child.kill.blame(
                    f"wedged: no sign of life for {age:.0f} s", wedged=True
                )
                logger.error(
                    "Child %s (pid %s) %s, SIGKILL",
                    child.slot,
                    child.pid,
                    child.kill.reason,
                    extra={"action": "child_wedged"},
                )
                self.kill(child, signal.SIGKILL)
            else:
                for job in view.jobs:
                    limit = self.config.time_limit_for(job.task_name)
                    if job.job_id not in child.timed_out_jobs and (
                        policy.is_over_time_limit(job.age(now), limit)
                    ):
                        self._time_limit(child, job, now)

    def _time_limit(self, child: Child, job: RunningJob, now: float) -> None:
        """Stop the child of a job past its time limit. Each job over its limit
        is blamed (logged, then failed or retried by its task's strategy); the
        child's other jobs are recovered without counting a crash."""
        reason = f"job {job.job_id} ({job.task_name}) exceeded its time limit"
        first = not child.timed_out_jobs
        child.timed_out_jobs.add(job.job_id)
        logger.error(
            "Child %s (pid %s): %s%s",
            child.slot,
            child.pid,
            reason,
            ", SIGTERM" if first else "",
            extra={"action": "time_limit", "job_id": job.job_id},
        )
        if first:
            self.kill(child, signal.SIGTERM)
            child.kill = child.kill.blame(reason).schedule(
                now + TIME_LIMIT_GRACE, child.kill.why
            )
