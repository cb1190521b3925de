"""Recovery of dead children's jobs, oldest death first, retried with
backoff when the database errs.

It owns the queue of deaths whose jobs are still to recover. It is given
the database session, the clock, the app (a job past its time limit is
retried by its task's strategy), the totals it counts into, the outbox
of the live page and ``wake`` (children look for the jobs put back)."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import logging
from collections.abc import Callable
from typing import Any

import procrastinate
from procrastinate import jobs as jobs_module

from ..config import PreforkConfig
from ..fleet import events, recovery
from ..observability import metrics
from . import db as db_module
from .system import System

logger = logging.getLogger("procrastinate_prefork.supervisor")

#: first and longest wait before trying again a recovery that failed while the
#: database answered (an error, not an outage)
RECOVERY_RETRY_MIN, RECOVERY_RETRY_MAX = 1.0, 30.0


@dataclasses.dataclass
class PendingRecovery:
    """A dead child's worker whose jobs are still to recover (the database
    may be down when the child dies)."""

    worker_id: int
    cause: str
    pid: int
    timed_out: set[int]
    count_crash: bool
    failures: int = 0
    next_attempt: float = 0.0  # monotonic
    #: the time limit of a task in the child's pool (the host's if None)
    time_limit_for: Callable[[str | None], float | None] | None = None


def retry_delay(failures: int) -> float:
    """The wait before the next attempt of a recovery that failed
    ``failures`` times in a row."""
    return min(RECOVERY_RETRY_MAX, RECOVERY_RETRY_MIN * 2.0 ** (failures - 1))


class Outbox:
    """Deaths and recoveries for the live page, until they are written."""

    def __init__(self) -> None:
        self.pending: list[events.Event] = []

    def add(self, new: list[events.Event]) -> None:
        self.pending = events.keep(self.pending, new)


class Recovery:
    def __init__(
        self,
        config: PreforkConfig,
        db: db_module.SupervisorDB,
        system: System,
        app: procrastinate.App,
        totals: metrics.Totals,
        outbox: Outbox,
        wake: Callable[[], None],
    ):
        self.config = config
        self.db = db
        self.system = system
        self.app = app
        self.totals = totals
        self.outbox = outbox
        self.wake = wake
        self.unrecovered: list[PendingRecovery] = []

    def add(self, pending: PendingRecovery) -> None:
        self.unrecovered.append(pending)
        self.run()

    def last_attempt(self) -> None:
        for pending in self.unrecovered:
            pending.next_attempt = 0.0  # a last attempt for each, backoff or not
        self.run()

    def report_deferred(self) -> None:
        if self.unrecovered:
            logger.error(
                "%d dead child(ren)'s jobs could not be recovered (database down); "
                "the stalled-job sweep of any supervisor will retry them",
                len(self.unrecovered),
                extra={"action": "recovery_deferred"},
            )

    def run(self) -> None:
        """Recover dead children's jobs, oldest death first. One that fails
        while the database answers is tried again later, with backoff, and
        does not hold back the others; an outage stops them all."""
        for pending in list(self.unrecovered):
            now = self.system.monotonic()
            if now < pending.next_attempt:
                continue
            done = self.db.run(
                functools.partial(
                    recovery.recover_worker_jobs,
                    worker_ids=[pending.worker_id],
                    cause=pending.cause,
                    max_crash_retries=self.config.max_crash_retries,
                    timed_out_job_ids=pending.timed_out,
                    timeout_retry=functools.partial(
                        self._timeout_retry,
                        pending.time_limit_for or self.config.time_limit_for,
                    ),
                    child_pid=pending.pid,
                    count_crash=pending.count_crash,
                )
            )
            if done is None:
                if not self.db.is_up:
                    return  # database down: try again next tick
                pending.failures += 1
                pending.next_attempt = now + retry_delay(pending.failures)
                continue
            self.unrecovered.remove(pending)
            self.counted(done)
            if any(r.action is recovery.Action.RETRIED for r in done):
                self.wake()

    def counted(self, done: list[recovery.Recovery]) -> None:
        """Jobs of dead processes: put back (``recovered``) or ended here."""
        for result in done:
            outcome = result.action.value
            if result.action is recovery.Action.RETRIED:
                outcome = "recovered"
            self.totals.job(result.queue, result.task_name, outcome)
        self.outbox.add(
            [
                events.Event(
                    kind="recovered",
                    job_id=r.job_id,
                    task_name=r.task_name,
                    queue_name=r.queue,
                    cause=r.cause[:255],
                    outcome=f"{r.action.value}: {r.reason}"[:255],
                )
                for r in done
            ]
        )

    def _timeout_retry(
        self,
        time_limit_for: Callable[[str | None], float | None],
        row: dict[str, Any],
    ) -> tuple[bool, datetime.datetime | None]:
        task = self.app.tasks.get(row["task_name"])
        if task is None:
            return False, None
        limit = time_limit_for(row["task_name"])
        job_retry = task.get_retry_exception(
            exception=recovery.JobTimeLimitExceeded(f"ran longer than {limit} s"),
            job=jobs_module.Job.from_row(row),
        )
        if job_retry is None:
            return False, None
        return True, job_retry.retry_decision.retry_at
