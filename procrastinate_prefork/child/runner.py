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
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import setproctitle

from .. import compat
from ..compat import fetches, periodic
from ..config import PreforkConfig
from ..config.pools import DEFAULT_POOL
from ..observability import jsonlog, logfiles, redact
from ..supervisor import db
from . import bootstrap as bootstrap_module
from . import session, softlimit
from .jobtracker import JobTracker
from .scoreboard import Scoreboard, SlotWriter, State

logger = logging.getLogger("procrastinate_prefork.child")

#: exit code of a child that could not bootstrap (the supervisor backs off)
EXIT_BOOT_ERROR = 3
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
    #: the supervisor's row in the fleet table (None: not registered)
    supervisor_row: int | None = None
    pool: str = DEFAULT_POOL

    @property
    def label(self) -> str:
        """The child in its process title: its slot, and its pool's name
        unless it is the one pool of a fleet without pools."""
        return child_label(self.pool, self.slot)


def child_label(pool: str, slot: int) -> str:
    return str(slot) if pool == DEFAULT_POOL else f"{pool}/{slot}"


def worker_name(name: str, pool: str, slot: int) -> str:
    """procrastinate's worker name of a child: ``<name>-<slot>``, with the
    pool's name between the two for a pool other than the default one."""
    return f"{name}-{slot}" if pool == DEFAULT_POOL else f"{name}-{pool}-{slot}"


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
    jsonlog.set_process(
        "child", spec.slot, None if spec.pool == DEFAULT_POOL else spec.pool
    )
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
        f"procrastinate-prefork child {spec.label} [starting] ({spec.config.hostname})"
    )
    spec.bootstrap.after_fork_in_child(
        db.application_name(spec.config.hostname, str(spec.slot), os.getpid())
    )


def _supervisor_polls(
    scoreboard: Scoreboard, config: PreforkConfig
) -> Callable[[], bool]:
    """Whether the supervisor's polls are on time (``compat.fetches``); never
    in one-shot mode, where the worker's fetches are its own."""
    late_after = config.polls_late_after

    def on_time() -> bool:
        return config.wait and time.monotonic() - scoreboard.polled() < late_after

    return on_time


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
    args["kwargs"] = kwargs
    if config.child_concurrency == 1:
        connector: Any = session.SessionConnector(spec.wake_fd, **args)
    else:
        args.update(
            # One session per job that can run at once: psycopg_pool's default
            # of 4 per process would multiply the fleet's sessions for nothing.
            min_size=1,
            max_size=config.child_concurrency,
            # back within seconds of the end of a database outage, not minutes
            pool_factory=compat.PromptReconnectPool,
        )
        connector = session.PipeWakeConnector(spec.wake_fd, **args)
    tracker = JobTracker(writer, config, spec.scoreboard.finished)
    tracker.label = spec.label

    with spec.bootstrap.worker_app(connector) as app:
        compat.on_worker_registered(app, tracker.registered)
        compat.finish_only_owned_jobs(
            app,
            fetch_next=_fetch_next(tracker) if config.child_concurrency == 1 else None,
        )
        compat.restore_deleted_worker_row(app)
        fetches.give_back_lost_fetches(app)
        if spec.supervisor_row is not None:
            fetches.record_worker_before_fetching(
                app,
                host=config.hostname,
                supervisor_row=spec.supervisor_row,
                slot=spec.slot,
            )
        compat.survive_database_outages(app, keep_fetching=config.wait)
        compat.on_job_ended(app, tracker.ended)
        if not config.wait:  # one-shot: tell "queues empty" from other stops
            compat.on_fetch(app, tracker.fetched)
        fetches.fetch_when_needed(
            app, lambda: connector.wakes, _supervisor_polls(spec.scoreboard, config)
        )
        options = config.worker_options(spec.slot)
        options["name"] = worker_name(config.name, spec.pool, spec.slot)
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
        periodic.gate_periodic_deferrer(
            worker,
            lambda: spec.scoreboard.deferrer() == pid,
            _deferrer_changed(spec.slot),
        )
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
            await tracker.hand_over(spec.supervisor_pid)
            beat.cancel()
            writer.set_state(State.STOPPED)
    return tracker.exit_code()


def _fetch_next(tracker: JobTracker) -> Callable[[], tuple[Any, int] | None]:
    """Where the worker fetches its next job right after recording one's end
    (its queues and worker id), or None if it will not: it is stopping. With
    one job at a time, procrastinate's worker fetches as soon as a job ends."""

    def where() -> tuple[Any, int] | None:
        worker = tracker.worker
        if tracker.draining or worker is None or worker.worker_id is None:
            return None
        return worker.queues, worker.worker_id

    return where


def _deferrer_changed(slot: int) -> Callable[[bool], None]:
    def changed(running: bool) -> None:
        if running:
            logger.info(
                "Child %s runs the periodic deferrer",
                slot,
                extra={"action": "periodic_deferrer_started", "slot": slot},
            )
        else:
            logger.info(
                "Child %s no longer runs the periodic deferrer",
                slot,
                extra={"action": "periodic_deferrer_stopped", "slot": slot},
            )

    return changed


def _reopen_logs(slot: int) -> None:
    count = logfiles.reopen()
    logger.info(
        "Child %s: SIGUSR1, %d log file(s) reopened",
        slot,
        count,
        extra={"action": "reopen_logs", "files": count},
    )
