# A part of ``Supervisor``: its methods take ``self: Supervisor`` so that mypy
# checks them against the whole class; mypy reports such self-types of a mixin
# as "erased type of self" (misc), which is what it is meant to be here.
# mypy: disable-error-code="misc"
"""Policing: SIGKILL when a scheduled kill falls due, when a child is wedged,
and SIGTERM then SIGKILL for a job past its time limit."""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING

from ..child.scoreboard import RunningJob
from . import policy
from .children import Child

if TYPE_CHECKING:
    from .arbiter import Supervisor

logger = logging.getLogger("procrastinate_prefork.supervisor")

TIME_LIMIT_GRACE = 2.0  # between SIGTERM and SIGKILL of a child past its time limit


class Policing:
    """Deadlines, wedges and time limits (a part of ``Supervisor``)."""

    def _police(self: Supervisor) -> None:
        now = self.system.monotonic()
        for child in list(self.children.values()):
            view = self.scoreboard.read(child.slot)
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
                self._kill(child, signal.SIGKILL)
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
                self._kill(child, signal.SIGKILL)
            else:
                for job in view.jobs:
                    limit = self.config.time_limit_for(job.task_name)
                    if job.job_id not in child.timed_out_jobs and (
                        policy.is_over_time_limit(job.age(now), limit)
                    ):
                        self._time_limit(child, job, now)

    def _time_limit(
        self: Supervisor, child: Child, job: RunningJob, now: float
    ) -> None:
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
            self._kill(child, signal.SIGTERM)
            child.kill = child.kill.blame(reason).schedule(
                now + TIME_LIMIT_GRACE, child.kill.why
            )
