"""What runs in a child after the fork: reset, bootstrap, run one worker.

``run_child`` returns the child's exit code to ``forked.child_main``, which
ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import psutil
import setproctitle
from procrastinate import connector as connector_module
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate import job_context, psycopg_connector

from . import bootstrap as bootstrap_module
from . import compat, db, jsonlog, logfiles, policy, redact, softlimit, wakepipe
from .config import PreforkConfig
from .jobring import Finished, JobRing, Outcome
from .scoreboard import Scoreboard, SlotWriter, State

logger = logging.getLogger("procrastinate_prefork.child")

#: exit code of a child that could not bootstrap (the supervisor backs off)
EXIT_BOOT_ERROR = 3
#: how often the event loop proves it is alive to the supervisor
BEAT_INTERVAL = 0.25
PR_SET_PDEATHSIG = 1

_RESET_SIGNALS = (
    signal.SIGTERM,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGCHLD,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


@dataclasses.dataclass
class ChildSpec:
    slot: int
    config: PreforkConfig
    bootstrap: bootstrap_module.Bootstrap
    scoreboard: Scoreboard
    wake_fd: int | None  # read end of the supervisor's wake-up pipe
    supervisor_pid: int
    inherited_fds: Iterable[int] = ()  # the supervisor's own fds, to close
    on_start: Callable[..., Any] | None = None


class PipeWakeConnector(psycopg_connector.PsycopgConnector):
    """procrastinate's psycopg connector, except that LISTEN/NOTIFY is replaced
    by the supervisor's pipe: one LISTEN session per host instead of one per
    child, and the supervisor can wake a child after a recovery."""

    def __init__(self, wake_fd: int | None, **kwargs: Any):
        super().__init__(**kwargs)
        self._wake_fd = wake_fd

    async def listen_notify(
        self, on_notification: connector_module.Notify, channels: Iterable[str]
    ) -> None:
        if self._wake_fd is None:
            return
        fd, self._wake_fd = self._wake_fd, None
        async for channel, payload in wakepipe.read_wakes(fd):
            await on_notification(channel=channel, payload=payload)


def run_child(spec: ChildSpec) -> int:
    """Run one worker in this (forked) process; its exit code."""
    try:
        _reset_process(spec)
        return asyncio.run(_serve(spec))
    except bootstrap_module.BootstrapError as exc:
        with contextlib.suppress(BaseException):
            logger.error("Child %s cannot start: %s", spec.slot, exc)
        return EXIT_BOOT_ERROR
    except BaseException:  # report anything, then die
        with contextlib.suppress(BaseException):
            logger.exception("Child %s crashed", spec.slot)
        return 1


def _reset_process(spec: ChildSpec) -> None:
    signal.set_wakeup_fd(-1)
    jsonlog.set_process("child", spec.slot)
    for signum in _RESET_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    # Ctrl-C reaches the whole process group; the supervisor turns it into one
    # drain of every child, so the children themselves ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Their default action would end the child: ignored until its event loop
    # takes SIGUSR1 over (reopen the logs, as the supervisor does).
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    for fd in spec.inherited_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    _die_with_parent(spec.supervisor_pid)
    setproctitle.setproctitle(
        f"procrastinate-prefork child {spec.slot} [starting] ({spec.config.hostname})"
    )
    spec.bootstrap.after_fork_in_child(
        db.application_name(spec.config.hostname, str(spec.slot), os.getpid())
    )


def _die_with_parent(supervisor_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the parent-pid check in the beat loop covers it
    if os.getppid() != supervisor_pid:  # it died before prctl took effect
        os._exit(1)


async def _serve(spec: ChildSpec) -> int:
    config = spec.config
    writer = SlotWriter(spec.scoreboard, spec.slot)
    pid = os.getpid()
    args = spec.bootstrap.connection_args()
    kwargs = dict(args.get("kwargs") or {})
    kwargs["application_name"] = db.application_name(
        config.hostname, str(spec.slot), pid
    )
    args.update(
        kwargs=kwargs,
        # One session per job that can run at once: psycopg_pool's default of 4
        # per process would multiply the fleet's sessions for nothing.
        min_size=1,
        max_size=config.child_concurrency,
        # back within seconds of the end of a database outage, not minutes
        pool_factory=compat.PromptReconnectPool,
    )
    connector = PipeWakeConnector(spec.wake_fd, **args)
    tracker = _JobTracker(writer, config, spec.scoreboard.finished)

    with spec.bootstrap.worker_app(connector) as app:
        compat.on_worker_registered(app, tracker.registered)
        compat.finish_only_owned_jobs(app)
        compat.restore_deleted_worker_row(app)
        compat.survive_database_outages(app, keep_fetching=config.wait)
        if not config.wait:  # one-shot: tell "queues empty" from other stops
            compat.on_fetch(app, tracker.fetched)
        options = config.worker_options(spec.slot)
        redact.install(options["name"])  # no job arguments in INFO logs
        user_middleware = list(app.worker_defaults.get("worker_middleware") or [])
        options["worker_middleware"] = [tracker.middleware, *user_middleware]
        if config.soft_job_timeout is not None or config.task_soft_timeouts:
            tracker.soft = softlimit.SoftLimits(config.soft_time_limit_for)
            options["task_middleware"] = [
                *(app.worker_defaults.get("task_middleware") or []),
                tracker.soft.sync_middleware,
                tracker.soft.async_middleware,
            ]
        worker = compat.make_worker(app, **options)
        tracker.worker = worker
        if spec.on_start is not None:
            spec.on_start(slot=spec.slot, pid=pid)

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, tracker.stop)
        loop.add_signal_handler(signal.SIGUSR1, _reopen_logs, spec.slot)
        beat = asyncio.create_task(tracker.beat_forever(spec.supervisor_pid))
        try:
            async with app.open_async():
                await worker.run()
        finally:
            beat.cancel()
            writer.set_state(State.STOPPED)
    return tracker.exit_code()


def _reopen_logs(slot: int) -> None:
    count = logfiles.reopen()
    logger.info(
        "Child %s: SIGUSR1, %d log file(s) reopened",
        slot,
        count,
        extra={"action": "reopen_logs", "files": count},
    )


class _JobTracker:
    """Keeps the child's scoreboard slot up to date."""

    def __init__(
        self, writer: SlotWriter, config: PreforkConfig, ring: JobRing | None = None
    ):
        self.writer = writer
        self.ring = ring
        self.config = config
        self.worker: Any = None
        self.soft: softlimit.SoftLimits | None = None
        self.running = 0
        self.jobs_done = 0
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

    def _rss_mb(self) -> float:
        try:
            return self._process.memory_info().rss / 2**20
        except psutil.Error:
            return 0.0

    def _title(self, state: str) -> None:
        setproctitle.setproctitle(
            f"procrastinate-prefork child {self.writer.slot} [{state}] "
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
            outcome = _outcome(exc, context, worker)
            raise
        finally:
            if self.ring is not None:
                self.ring.append(
                    self.writer.slot,
                    Finished(
                        job.queue, job.task_name, outcome, time.monotonic() - started
                    ),
                )
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
            ticks += 1
            await asyncio.sleep(BEAT_INTERVAL)


def _outcome(exc: BaseException, context: Any, worker: Any) -> Outcome:
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
