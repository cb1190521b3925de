"""A child's bookkeeping of its jobs: its scoreboard slot, the ring of
finished jobs, soft limits, recycling by jobs done or memory, and the exit
code it ends with."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from typing import Any

import psutil
import setproctitle
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate import job_context

from ..config import PreforkConfig
from ..observability import metrics
from ..supervisor import policy
from . import softlimit
from .jobring import Finished, JobRing, Outbox, Outcome
from .scoreboard import SlotWriter, State

logger = logging.getLogger("procrastinate_prefork.child")

#: how often the event loop proves it is alive to the supervisor
BEAT_INTERVAL = 0.25
#: seconds an exiting child waits for its supervisor to read the finished
#: jobs its ring had no room for: a few turns of the supervisor's loop
HAND_OVER_WAIT = 2.0


class JobTracker:
    """Keeps the child's scoreboard slot up to date."""

    def __init__(
        self, writer: SlotWriter, config: PreforkConfig, ring: JobRing | None = None
    ):
        self.writer = writer
        self.outbox = (
            None if ring is None else Outbox(ring, writer.slot, metrics.BUCKETS)
        )
        self.config = config
        self.worker: Any = None
        self.soft: softlimit.SoftLimits | None = None
        self.running = 0
        self.jobs_done = 0
        #: jobs the middleware has counted and procrastinate not yet recorded
        self.counted: set[int] = set()
        self.draining = False
        self.recycling = False
        #: the worker's last fetch found no job (tracked in one-shot mode only)
        self.found_empty = False
        self._process = psutil.Process()
        self.recycle_after = policy.recycle_limit(
            config.max_jobs_per_child,
            config.max_jobs_jitter,
            random.randint(0, config.max_jobs_jitter),  # noqa: S311 - jitter, no secret
        )
        self.baseline_mb = self._rss_mb()
        #: the child in its process title (its pool's name and its slot)
        self.label = str(writer.slot)

    def _rss_mb(self) -> float:
        try:
            return self._process.memory_info().rss / 2**20
        except psutil.Error:
            return 0.0

    def _title(self, state: str) -> None:
        setproctitle.setproctitle(
            f"procrastinate-prefork child {self.label} [{state}] "
            f"({self.config.hostname})"
        )

    def registered(self, worker_id: int) -> None:
        if self.draining and self.worker is not None:
            # asked to stop while starting: Worker.run() has just cleared its
            # stop event, so ask again once it is running
            asyncio.get_running_loop().call_soon(self.worker.stop)
        self.baseline_mb = self._rss_mb()
        if (
            self.config.max_memory_per_child is not None
            and self.baseline_mb > self.config.max_memory_per_child
        ):
            logger.error(
                "Child %s starts at %.0f MiB, above --max-memory-per-child %s: "
                "memory recycling is off for it (a replacement would start as big)",
                self.writer.slot,
                self.baseline_mb,
                self.config.max_memory_per_child,
                extra={"action": "memory_limit_below_baseline"},
            )
        self.writer.set_worker_id(worker_id)
        self.writer.set_state(State.IDLE)
        self._title("idle")
        logger.info(
            "Child %s (pid %s) ready, procrastinate worker id %s",
            self.writer.slot,
            os.getpid(),
            worker_id,
            extra={
                "action": "child_ready",
                "slot": self.writer.slot,
                "worker_id": worker_id,
            },
        )

    def fetched(self, found: bool) -> None:
        self.found_empty = not found

    def exit_code(self) -> int:
        """0 for a stop asked from outside (SIGTERM: a drain, a retirement, a
        time limit), unless the child recycled itself or, in one-shot mode,
        its worker stopped because a fetch found nothing to run."""
        if self.recycling:
            return policy.EXIT_RECYCLE
        if self.found_empty and not self.draining:
            return policy.EXIT_QUEUES_EMPTY
        return 0

    def stop(self) -> None:
        if not self.draining:
            self.draining = True
            self.writer.set_state(State.DRAINING)
            self._title("draining")
        if self.worker is not None:
            self.worker.stop()

    async def middleware(self, call_next: Any, context: Any, worker: Any) -> Any:
        job = context.job
        self.running += 1
        if not self.writer.job_started(job.id, job.task_name, self.running):
            logger.error(
                "Child %s runs more jobs at once than its slot holds: job %s has "
                "no time limit",
                self.writer.slot,
                job.id,
                extra={"action": "job_untracked", "job_id": job.id},
            )
        self._title(f"busy job {job.id} {job.task_name}")
        if self.soft is not None:
            self.soft.job_started(job.id, job.task_name)
        started = time.monotonic()
        outcome = Outcome.FAILED
        try:
            result = await call_next()
            outcome = Outcome.SUCCEEDED
            return result
        except BaseException as exc:
            outcome = outcome_of(exc, context, worker)
            raise
        finally:
            self.counted.add(job.id)
            self._record(job, outcome, time.monotonic() - started)
            if self.soft is not None:
                self.soft.job_ended(job.id)
            self.running -= 1
            self.jobs_done += 1
            self._maybe_recycle()
            self.writer.job_finished(
                job.id, self.running, self.jobs_done, self.draining
            )
            if not self.running and not self.draining:
                self._title("idle")

    def ended(self, job: Any, outcome: str) -> None:
        """procrastinate records a job's end: count it if the middleware did
        not, because procrastinate failed it before its middlewares ran."""
        if job.id in self.counted:
            self.counted.discard(job.id)
        else:  # never raise: it would keep procrastinate from recording it
            self._record(job, Outcome.__members__.get(outcome.upper(), Outcome.FAILED))

    def _record(
        self, job: Any, outcome: Outcome, duration: float | None = None
    ) -> None:
        if self.outbox is not None:
            self.outbox.add(Finished(job.queue, job.task_name, outcome, duration))

    async def hand_over(self, supervisor_pid: int) -> None:
        """Before the child exits: wait a little for the supervisor to read
        what the ring had no room for (what is left it counts as lost)."""
        deadline = time.monotonic() + HAND_OVER_WAIT
        while self.outbox is not None and self.outbox.waiting:
            self.outbox.flush()
            if (
                not self.outbox.waiting
                or time.monotonic() > deadline
                or os.getppid() != supervisor_pid
            ):
                return
            await asyncio.sleep(0.05)

    def _maybe_recycle(self) -> None:
        if self.draining:
            return
        reason = None
        if self.recycle_after is not None and self.jobs_done >= self.recycle_after:
            reason = f"{self.jobs_done} jobs done (limit {self.recycle_after})"
        elif self.config.max_memory_per_child is not None:
            rss_mb = self._rss_mb()
            if policy.should_recycle_for_memory(
                rss_mb, self.config.max_memory_per_child, self.baseline_mb
            ):
                reason = (
                    f"{rss_mb:.0f} MiB resident "
                    f"(limit {self.config.max_memory_per_child} MiB)"
                )
        if reason:
            self.recycling = True
            logger.info(
                "Child %s (pid %s) recycling: %s",
                self.writer.slot,
                os.getpid(),
                reason,
                extra={"action": "child_recycle", "slot": self.writer.slot},
            )
            self.stop()

    async def beat_forever(self, supervisor_pid: int) -> None:
        ticks = 0
        while True:
            if os.getppid() != supervisor_pid:
                os._exit(1)  # orphaned and PDEATHSIG unavailable
            rss = None
            if ticks % 20 == 0:
                try:
                    rss = self._process.memory_info().rss
                except psutil.Error:
                    rss = None
            self.writer.beat(rss)
            if self.outbox is not None:
                self.outbox.flush()
            ticks += 1
            await asyncio.sleep(BEAT_INTERVAL)


def outcome_of(exc: BaseException, context: Any, worker: Any) -> Outcome:
    """How procrastinate's worker ends a job that raised ``exc``: retried by
    the task's strategy (an abort only when the worker shuts down), else
    aborted or failed."""
    aborted = isinstance(
        exc, (procrastinate_exceptions.JobAborted, asyncio.CancelledError)
    )
    task = worker.app.tasks.get(context.job.task_name)
    if (
        task is not None
        and (
            not isinstance(exc, procrastinate_exceptions.JobAborted)
            or context.abort_reason() == job_context.AbortReason.SHUTDOWN
        )
        and task.get_retry_exception(exception=exc, job=context.job)
    ):
        return Outcome.RETRIED
    return Outcome.ABORTED if aborted else Outcome.FAILED
