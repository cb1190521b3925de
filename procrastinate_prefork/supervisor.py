"""The arbiter: one single-threaded loop that forks, reaps, recovers and
re-forks children, forwards wake-ups to them and keeps the fleet table fresh.

Signals are only queued by their handlers and handled in the loop, which
sleeps in ``select`` on a self-pipe (``signal.set_wakeup_fd``), the database
session and the probe socket. Nothing here blocks on one child.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import functools
import json
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from typing import Any

import psycopg
import setproctitle
from procrastinate import jobs as jobs_module
from procrastinate import manager as manager_module

from . import db, fleet, logfiles, policy, probe, recovery, redact, schema, slots
from . import errors, wakepipe
from .fleet import count_runnable
from .bootstrap import Bootstrap
from .child import ChildSpec, run_child
from .config import MAX_CHILDREN, PreforkConfig
from .scoreboard import RunningJob, Scoreboard, State

logger = logging.getLogger("procrastinate_prefork.supervisor")

TICK = 0.25  # longest sleep of the loop: wedge and deadline checks
TIME_LIMIT_GRACE = 2.0  # between SIGTERM and SIGKILL of a child past its time limit
KILL_MARGIN = 1.0  # after the shared drain deadline, before SIGKILL


class StartupError(Exception):
    """The fleet cannot start. The message is one line, for the user."""


class Phase(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"
    STOPPING = "stopping"


@dataclasses.dataclass
class Child:
    slot: int
    pid: int
    started: float  # monotonic
    started_at: datetime.datetime
    wake_fd: int
    kill_reason: str | None = None  # why we killed it, once we have
    kill_at: float | None = None  # SIGKILL when this monotonic time passes...
    kill_at_reason: str = ""  # ...and this is why
    deadline_kill: bool = False  # killed at a drain/retire deadline: not the job's fault
    #: its jobs that ran past their time limit (the child was stopped for them)
    timed_out_jobs: set[int] = dataclasses.field(default_factory=set)
    generation: int = 0  # bumped by SIGHUP: older children are rolled over
    retiring: bool = False  # asked to stop for good (scale down, rolling restart)


#: first and longest wait before trying again a recovery that failed while the
#: database answered (an error, not an outage)
RECOVERY_RETRY_MIN, RECOVERY_RETRY_MAX = 1.0, 30.0


@dataclasses.dataclass
class _PendingRecovery:
    """A dead child's worker whose jobs are still to recover (the database
    may be down when the child dies)."""

    worker_id: int
    cause: str
    pid: int
    timed_out: set[int]
    count_crash: bool
    failures: int = 0
    next_attempt: float = 0.0  # monotonic


class Supervisor:
    def __init__(
        self,
        config: PreforkConfig,
        bootstrap: Bootstrap,
        *,
        on_child_start: Callable[..., Any] | None = None,
        on_child_exit: Callable[..., Any] | None = None,
    ):
        self.config = config
        self.bootstrap = bootstrap
        self.app = bootstrap.app
        self.pid = os.getpid()
        self.target = config.initial_children
        self.generation = 0
        self._quiet_since = time.monotonic()
        self._next_autoscale = 0.0
        self.on_child_start = on_child_start
        self.on_child_exit = on_child_exit
        self.children: dict[int, Child] = {}
        self.history: dict[int, policy.SlotHistory] = {}
        self.respawn_at: dict[int, float] = {}
        self.unrecovered: list[_PendingRecovery] = []
        self.phase = Phase.RUNNING
        self.deadline: float | None = None
        self.crash_looping = False
        self.supervisor_row: int | None = None
        self.scoreboard = Scoreboard(2 * MAX_CHILDREN, config.child_concurrency)
        self._signals: list[int] = []
        self._sig_r = self._sig_w = -1
        self._next_heartbeat = 0.0
        self._next_sweep = 0.0
        #: our own heartbeats: what the sweep may conclude from others' silence
        self.heartbeats = policy.HeartbeatSeries()
        self._wake_pending = False
        self._recorded_worker_ids: frozenset[int] = frozenset()
        self.ready_logged = False
        self.probe: probe.ProbeServer | None = None  # --health-port
        channels = (
            list(manager_module.get_channel_for_queues(config.queues))
            if config.listen_notify else []
        )
        self.db_timeouts = db.Timeouts.for_heartbeat(config.heartbeat_interval)
        self.db = db.SupervisorDB(
            bootstrap.connection_args(),
            db.application_name(config.hostname, "sup", self.pid),
            channels,
            timeouts=self.db_timeouts,
        )
        self.db.on_connect = self._request_wake

    # ------------------------------------------------------------- main loop

    def run(self) -> int:
        try:
            self._preflight()
        except psycopg.OperationalError as exc:
            if not db.is_timeout(exc):
                raise
            raise StartupError(
                f"the database did not answer in time ({errors.one_line(exc)})"
            ) from None
        self._install_signals()
        setproctitle.setproctitle(self._title())
        for slot in range(self.target):
            self.respawn_at[slot] = 0.0
        try:
            self._spawn_due(at_start=True)
        except StartupError:
            while self.children:  # the ones forked before the failure
                self._reap()
                time.sleep(0.05)
            self._finish()
            raise
        try:
            while not self._finished():
                self._handle_signals()
                self._reap()
                self._police()
                self._scale()
                self._spawn_due()
                self._forward_wakeups()
                self._periodic()
                self._sleep()
        except Exception:
            logger.exception("Supervisor failed; stopping its children",
                             extra={"action": "supervisor_crashed"})
            self._stop_now("supervisor failure")
            while self.children:
                self._reap()
                time.sleep(0.05)
            self._finish()
            return 1
        self._finish()
        return 0

    def _finished(self) -> bool:
        if self.children:
            return False
        if self.phase is not Phase.RUNNING:
            return True
        return not self.respawn_at  # one-shot: every child is done

    # --------------------------------------------------------------- start

    def _preflight(self) -> None:
        try:  # bound before anything is forked or registered
            self.probe = probe.open_for(self)
        except probe.ProbeBindError as exc:
            raise StartupError(str(exc)) from None
        try:
            self.app.perform_import_paths()  # children inherit the imported tasks
        except Exception as exc:  # the user's task modules
            raise StartupError(
                f"cannot import the task modules: {type(exc).__name__}: {exc}"
            ) from None
        unknown = sorted(set(self.config.task_timeouts) - set(self.app.tasks))
        if unknown:  # a typo would leave the task without its limit, silently
            logger.warning(
                "--task-timeout names no registered task: %s (their limits apply "
                "to nothing)", ", ".join(unknown),
                extra={"action": "unknown_task_timeout", "tasks": unknown},
            )
        try:
            self._check_pooling()
            conn = db.connect(
                self.bootstrap.connection_args(), self.db.app_name, self.db_timeouts,
                autocommit=True,
            )
        except StartupError:
            raise
        except Exception as exc:  # psycopg.Error or a bad conninfo
            # libpq quotes what it cannot parse, a password included
            first_line = redact.without_secrets(
                errors.one_line(exc), self.bootstrap.connection_args()
            )
            raise StartupError(f"cannot connect to the database: {first_line}") from None
        with conn, db.bounded(conn, self.db_timeouts):
            missing = schema.missing_tables(conn)
            if any(name.startswith("procrastinate_prefork") for name in missing) and not any(
                not name.startswith("procrastinate_prefork") for name in missing
            ):
                raise StartupError(
                    "the procrastinate-prefork tables are missing: "
                    + self.bootstrap.schema_hint("prefork")
                )
            if missing:
                raise StartupError(
                    "the procrastinate schema is missing: "
                    + self.bootstrap.schema_hint("procrastinate")
                )
            identity = fleet.process_identity()
            self.supervisor_row = fleet.register_supervisor(
                conn, host=self.config.hostname, pid=self.pid,
                concurrency=self.target, queues=self.config.queues,
                heartbeat_interval=self.config.heartbeat_interval,
                stalled_timeout=self.config.stalled_timeout, identity=identity,
            )
            for predecessor in fleet.dead_predecessors(
                conn, host=self.config.hostname, own_id=self.supervisor_row,
                stalled_timeout=self.config.stalled_timeout, identity=identity,
            ):
                recovered = recovery.recover_worker_jobs(
                    conn, predecessor["worker_ids"],
                    cause=f"supervisor pid {predecessor['pid']} on this host is gone",
                    max_crash_retries=self.config.max_crash_retries,
                )
                fleet.mark_stopped(conn, predecessor["id"])
                logger.warning(
                    "Predecessor supervisor (pid %s) is gone: recovered %d job(s)",
                    predecessor["pid"], len(recovered),
                    extra={"action": "predecessor_recovered", "jobs": len(recovered)},
                )

    def _check_pooling(self) -> None:
        """Before any fork: are the app's connections pooled per transaction
        (PgBouncer), and where can the supervisor LISTEN?

        Pooled: prepared statements go off on every connection of the fleet
        (``Bootstrap.pooler_safe``); the supervisor's session moves to
        ``--listen-dsn`` if that one receives notifications, else it stops
        LISTENing and new jobs are found by the children's polling. Either way
        the supervisor still wakes children through their pipes after a
        recovery or a sweep."""
        config = self.config
        self.bootstrap.transaction_pooled = not db.listen_works(
            self.bootstrap.connection_args(), self.db.app_name
        )
        if config.listen_dsn is not None:
            # on its own: the app's kwargs (host, port...) would override it
            self.db.connection_args = {"conninfo": config.listen_dsn}
            try:
                direct = db.listen_works(self.db.connection_args, self.db.app_name)
            except Exception as exc:  # psycopg.Error: libpq never shows a password
                first_line = errors.one_line(exc)
                raise StartupError(f"cannot connect with --listen-dsn: {first_line}"
                                   ) from None
            if not direct:  # pooled too: same precaution as the app's
                self.db.connection_args["kwargs"] = {"prepare_threshold": None}
        else:
            direct = not self.bootstrap.transaction_pooled
            self.db.connection_args = self.bootstrap.connection_args()
        if self.bootstrap.transaction_pooled:
            logger.info(
                "The database connections go through a transaction pooler: "
                "prepared statements off", extra={
                    "action": "transaction_pooling",
                    "listen_dsn": config.listen_dsn is not None,
                },
            )
        if not direct and config.listen_notify:
            self.db.channels = []  # a LISTEN there would receive nothing
            logger.warning(
                "LISTEN receives no notification on %s: new jobs are found by "
                "polling every %g s (give --listen-dsn a direct connection)",
                "the --listen-dsn connection" if config.listen_dsn
                else "the database connection", config.fetch_job_polling_interval,
                extra={"action": "listen_unavailable", "fallback": "polling",
                       "polling_interval": config.fetch_job_polling_interval},
            )

    def _install_signals(self) -> None:
        self._sig_r, self._sig_w = os.pipe()
        for fd in (self._sig_r, self._sig_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self._sig_w, warn_on_full_buffer=False)
        for signum in (
            signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD,
            signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU,
            # Their default action would end the supervisor: operators send
            # SIGUSR1 by habit (log rotation), SIGUSR2 or SIGALRM by mistake
            # (db.deadline uses SIGALRM during a database call).
            signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM,
        ):
            signal.signal(signum, self._queue_signal)

    def _queue_signal(self, signum: int, frame: Any) -> None:
        self._signals.append(signum)

    # ------------------------------------------------------------- signals

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGCHLD:
                continue  # the loop reaps on every turn
            if signum == signal.SIGUSR1:
                self._reopen_logs()
                continue
            if signum in (signal.SIGUSR2, signal.SIGALRM):
                name = signal.Signals(signum).name
                logger.info("%s: ignored", name,
                            extra={"action": "signal_ignored", "signal": name})
                continue
            if signum in (signal.SIGTTIN, signal.SIGTTOU, signal.SIGHUP):
                if self.phase is Phase.RUNNING:
                    actions: dict[int, Callable[[], None]] = {
                        signal.SIGTTIN: self._grow, signal.SIGTTOU: self._shrink,
                        signal.SIGHUP: self._rolling_restart,
                    }
                    actions[signum]()
                continue
            if signum == signal.SIGQUIT or self.phase is not Phase.RUNNING:
                self._stop_now(signal.Signals(signum).name)
            else:
                self._drain(signal.Signals(signum).name)

    def _reopen_logs(self) -> None:
        count = logfiles.reopen()
        logger.info("SIGUSR1: %d log file(s) reopened; children asked to do the same",
                    count, extra={"action": "reopen_logs", "files": count})
        for child in self.children.values():
            self._kill(child, signal.SIGUSR1)

    def _drain(self, why: str) -> None:
        timeout = self.config.shutdown_graceful_timeout
        self.phase = Phase.DRAINING
        self.deadline = time.monotonic() + timeout
        self.respawn_at.clear()
        logger.info(
            "%s: draining %d child(ren), %g s for running jobs",
            why, len(self.children), timeout, extra={"action": "drain"},
        )
        for child in self.children.values():
            self._kill(child, signal.SIGTERM)
            child.kill_at = self.deadline + KILL_MARGIN
            child.kill_at_reason = "shutdown deadline passed"
        setproctitle.setproctitle(self._title())

    def _stop_now(self, why: str) -> None:
        self.phase = Phase.STOPPING
        self.respawn_at.clear()
        logger.warning(
            "%s: stopping now, killing %d child(ren)", why, len(self.children),
            extra={"action": "stop_now"},
        )
        for child in self.children.values():
            child.kill_reason = child.kill_reason or "immediate stop"
            self._kill(child, signal.SIGKILL)

    def _kill(self, child: Child, signum: int) -> None:
        try:
            os.kill(child.pid, signum)
        except ProcessLookupError:
            pass

    # ---------------------------------------------------------------- reap

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self._child_exited(child, status)

    def _child_exited(self, child: Child, status: int) -> None:
        now = time.monotonic()
        code, signum, text = policy.describe_exit(status)
        view = self.scoreboard.read(child.slot)
        os.close(child.wake_fd)
        cause = child.kill_reason or text
        if child.retiring and child.kill_reason is None:
            text += " (retired)"
        clean = code in (0, policy.EXIT_RECYCLE)
        if code == policy.EXIT_RECYCLE:
            text = "recycled itself"
        log = logger.info if clean else logger.warning
        log(
            "Child %s (pid %s) %s%s after %.1f s, %d job(s) done",
            child.slot, child.pid, text,
            f" ({child.kill_reason})" if child.kill_reason else "", now - child.started,
            view.jobs_done,
            extra={"action": "child_exited", "slot": child.slot, "pid": child.pid,
                   "exit_code": code, "signal": signum, "cause": cause},
        )
        if view.worker_id is not None:
            timed_out = set(child.timed_out_jobs)
            # Jobs killed at the shutdown deadline are not the job's fault, nor
            # are those of a child stopped for another job's time limit.
            count = not child.deadline_kill and not timed_out
            self.unrecovered.append(_PendingRecovery(
                view.worker_id, cause, child.pid, timed_out, count_crash=count
            ))
            self._recover_pending()
        self.scoreboard.clear(child.slot)
        self._call_exit_hook(child, code, signum)
        if not policy.should_replace(code, self.config.wait, self.phase is not Phase.RUNNING):
            return
        if child.retiring or child.generation != self.generation:
            return
        if self._planned() >= self.target:
            return  # scaled down meanwhile
        history = policy.record_death(
            self.history.get(child.slot, policy.SlotHistory()), now - child.started,
            clean, had_job=view.job_id is not None,
        )
        self.history[child.slot] = history
        delay = policy.restart_delay(history, cap=self.config.restart_backoff_max)
        self.respawn_at[child.slot] = now + delay
        if delay:
            logger.info("Re-forking slot %s in %.1f s", child.slot, delay,
                        extra={"action": "respawn_backoff", "slot": child.slot})
        self._update_crash_loop()

    def _update_crash_loop(self) -> None:
        looping = [s for s, h in self.history.items() if policy.is_crash_looping(h)]
        if looping and not self.crash_looping:
            logger.error(
                "CRASH LOOP: slot(s) %s died within %g s of start %d times in a row; "
                "re-forking with backoff (check the logs above for the cause)",
                ", ".join(map(str, looping)), policy.MIN_UPTIME,
                policy.CRASH_LOOP_THRESHOLD, extra={"action": "crash_loop"},
            )
        elif not looping and self.crash_looping:
            logger.warning("Crash loop over", extra={"action": "crash_loop_over"})
        self.crash_looping = bool(looping)

    def _recover_pending(self) -> None:
        """Recover dead children's jobs, oldest death first. One that fails
        while the database answers is tried again later, with backoff, and
        does not hold back the others; an outage stops them all."""
        for pending in list(self.unrecovered):
            now = time.monotonic()
            if now < pending.next_attempt:
                continue
            done = self.db.run(functools.partial(
                recovery.recover_worker_jobs,
                worker_ids=[pending.worker_id], cause=pending.cause,
                max_crash_retries=self.config.max_crash_retries,
                timed_out_job_ids=pending.timed_out, timeout_retry=self._timeout_retry,
                child_pid=pending.pid, count_crash=pending.count_crash,
            ))
            if done is None:
                if not self.db.is_up:
                    return  # database down: try again next tick
                pending.failures += 1
                pending.next_attempt = now + min(
                    RECOVERY_RETRY_MAX, RECOVERY_RETRY_MIN * 2 ** (pending.failures - 1)
                )
                continue
            self.unrecovered.remove(pending)
            if any(r.action is recovery.Action.RETRIED for r in done):
                self._request_wake()

    def _timeout_retry(self, row: dict[str, Any]) -> tuple[bool, datetime.datetime | None]:
        task = self.app.tasks.get(row["task_name"])
        if task is None:
            return False, None
        limit = self.config.time_limit_for(row["task_name"])
        job_retry = task.get_retry_exception(
            exception=recovery.JobTimeLimitExceeded(f"ran longer than {limit} s"),
            job=jobs_module.Job.from_row(row),
        )
        if job_retry is None:
            return False, None
        return True, job_retry.retry_decision.retry_at

    # -------------------------------------------------------------- police

    def _police(self) -> None:
        now = time.monotonic()
        for child in list(self.children.values()):
            view = self.scoreboard.read(child.slot)
            if child.kill_at is not None and now >= child.kill_at:
                child.kill_at = None
                if child.kill_reason is None:
                    child.kill_reason = child.kill_at_reason
                    child.deadline_kill = True
                logger.warning("Child %s (pid %s): %s, SIGKILL", child.slot, child.pid,
                               child.kill_reason, extra={"action": "child_killed"})
                self._kill(child, signal.SIGKILL)
            elif child.kill_reason is None and policy.is_wedged(
                view.heartbeat_age(now), self.config.child_timeout
            ):
                child.kill_reason = f"wedged: no sign of life for {view.heartbeat_age(now):.0f} s"
                logger.error("Child %s (pid %s) %s, SIGKILL", child.slot, child.pid,
                             child.kill_reason, extra={"action": "child_wedged"})
                self._kill(child, signal.SIGKILL)
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
        logger.error("Child %s (pid %s): %s%s", child.slot, child.pid, reason,
                     ", SIGTERM" if first else "",
                     extra={"action": "time_limit", "job_id": job.job_id})
        if first:
            child.kill_reason = reason
            self._kill(child, signal.SIGTERM)
            child.kill_at = now + TIME_LIMIT_GRACE

    # --------------------------------------------------------------- scale

    def _planned(self) -> int:
        """Children of the current generation that stay, plus pending forks."""
        staying = sum(
            1 for c in self.children.values()
            if c.generation == self.generation and not c.retiring
        )
        return staying + len(self.respawn_at)

    def _free_slot(self) -> int:
        used = {c.slot for c in self.children.values()} | set(self.respawn_at)
        return next(slot for slot in range(2 * MAX_CHILDREN) if slot not in used)

    def _grow(self, count: int = 1, why: str = "SIGTTIN") -> None:
        count = min(count, MAX_CHILDREN - self.target)
        for _ in range(count):
            self.target += 1
            self.respawn_at[self._free_slot()] = 0.0
        logger.info("%s: %d children now", why, self.target,
                    extra={"action": "scale_up", "children": self.target})
        setproctitle.setproctitle(self._title())

    def _shrink(self, why: str = "SIGTTOU", only_idle: bool = False) -> None:
        if self.target <= 1:
            logger.info("%s: already at one child", why)
            return
        if only_idle and not any(
            c.generation == self.generation and not c.retiring
            and self.scoreboard.read(c.slot).state is State.IDLE
            for c in self.children.values()
        ):
            return
        # ``_converge`` drops a pending fork or retires a child (one not ready
        # yet, else an idle one, the highest slot), whatever else is going on.
        self.target -= 1
        logger.info("%s: %d children now", why, self.target,
                    extra={"action": "scale_down", "children": self.target})
        setproctitle.setproctitle(self._title())

    def _retire(self, child: Child, why: str) -> None:
        """Stop a child for good: it finishes its jobs and is not replaced."""
        child.retiring = True
        child.kill_at = time.monotonic() + self.config.shutdown_graceful_timeout + KILL_MARGIN
        child.kill_at_reason = f"retirement deadline passed ({why})"
        self._kill(child, signal.SIGTERM)

    def _rolling_restart(self) -> None:
        # Only a new generation: ``_scale`` forks it and retires the older
        # ones as it gets ready. A SIGHUP during a hand-over thereby restarts
        # it rather than stacking another one.
        self.generation += 1
        logger.info(
            "SIGHUP: rolling restart of %d children (new ones first)", self.target,
            extra={"action": "rolling_restart", "generation": self.generation},
        )

    def _scale(self) -> None:
        """Converge to the target (hand-overs, sizes), then autoscale."""
        if self.phase is not Phase.RUNNING:
            return
        self._converge()
        self._autoscale()
        self._converge()

    def _converge(self) -> None:
        members = []
        for child in self.children.values():
            state = self.scoreboard.read(child.slot).state
            members.append(slots.Member(
                pid=child.pid, slot=child.slot, generation=child.generation,
                retiring=child.retiring, ready=state in (State.IDLE, State.BUSY),
                busy=state is State.BUSY,
            ))
        plan = slots.plan(members, target=self.target, generation=self.generation,
                          pending=len(self.respawn_at), refill=self.config.wait)
        for _ in range(plan.fork):
            self.respawn_at[self._free_slot()] = 0.0
        for _ in range(plan.cancel):
            del self.respawn_at[max(self.respawn_at)]
        for pid in plan.retire:
            child = self.children[pid]
            self._retire(child, "rolling restart" if child.generation != self.generation
                         else "scale down")

    def _autoscale(self) -> None:
        if self.config.autoscale is None:
            return
        now = time.monotonic()
        if now < self._next_autoscale:
            return
        self._next_autoscale = now + 1.0
        backlog = self.db.run(lambda conn: count_runnable(conn, self.config.queues))
        if backlog is None:
            return
        views = [self.scoreboard.read(c.slot) for c in self.children.values()
                 if not c.retiring]
        if backlog or any(v.state is State.BUSY for v in views):
            self._quiet_since = now
        low, high = self.config.autoscale
        delta = policy.autoscale_delta(
            current=self.target, low=low, high=high, backlog=backlog,
            idle=sum(v.state is State.IDLE for v in views),
            quiet_for=now - self._quiet_since, cooldown=self.config.autoscale_cooldown,
        )
        if delta > 0:
            self._grow(delta, why=f"autoscale ({backlog} jobs waiting)")
        elif delta < 0:
            self._shrink(why="autoscale (idle)", only_idle=True)
            self._quiet_since = now  # one child per cool-down

    def _call_exit_hook(self, child: Child, code: int | None, signum: int | None) -> None:
        if self.on_child_exit is None:
            return
        try:
            self.on_child_exit(slot=child.slot, pid=child.pid, exit_code=code, signal=signum)
        except Exception:  # a user hook must not take the supervisor down
            logger.exception("on_child_exit hook failed",
                             extra={"action": "hook_failed"})

    # --------------------------------------------------------------- spawn

    def _spawn_due(self, at_start: bool = False) -> None:
        if self.phase is not Phase.RUNNING:
            return
        now = time.monotonic()
        due = sorted(slot for slot, when in self.respawn_at.items() if when <= now)
        if not due:
            return
        # The session must not be inherited: close it, fork them all, reopen.
        self.db.close()
        self.bootstrap.before_fork()
        self.bootstrap.check_fork_safety()
        for slot in due:
            try:
                self._spawn(slot)
            except OSError as exc:
                if at_start:
                    self._stop_now("fork failed")
                    raise StartupError(f"cannot fork child {slot}: {exc}") from None
                logger.error("Cannot fork child %s: %s; retrying", slot, exc,
                             extra={"action": "fork_failed", "slot": slot})
                self.respawn_at[slot] = now + 1.0
                break
            del self.respawn_at[slot]
        self.db.ensure()  # LISTEN again at once: wake-ups must not wait

    def _spawn(self, slot: int) -> None:
        wake_r, wake_w = os.pipe()
        self.scoreboard.reset(slot)
        try:
            pid = os.fork()
        except OSError:
            os.close(wake_r)
            os.close(wake_w)
            raise
        if pid == 0:  # in the child: never returns
            os.close(wake_w)
            run_child(ChildSpec(
                slot=slot, config=self.config, bootstrap=self.bootstrap,
                scoreboard=self.scoreboard,
                wake_fd=wake_r if self.config.listen_notify else None,
                supervisor_pid=self.pid, inherited_fds=self._own_fds(),
                on_start=self.on_child_start,
            ))
        os.close(wake_r)
        os.set_blocking(wake_w, False)
        self.scoreboard.set_pid(slot, pid)
        self.children[pid] = Child(
            slot=slot, pid=pid, started=time.monotonic(),
            started_at=datetime.datetime.now(datetime.timezone.utc), wake_fd=wake_w,
            generation=self.generation,
        )
        logger.info("Child %s started (pid %s)", slot, pid,
                    extra={"action": "child_started", "slot": slot, "pid": pid})

    def _own_fds(self) -> list[int]:
        probe_fds = self.probe.filenos() if self.probe is not None else []
        return [self._sig_r, self._sig_w, *probe_fds,
                *(c.wake_fd for c in self.children.values())]

    # ------------------------------------------------------------- wakeups

    def _request_wake(self) -> None:
        self._wake_pending = True

    def _forward_wakeups(self) -> None:
        lines = []
        for channel, payload in self.db.notifications():
            try:
                kind = json.loads(payload).get("type")
            except (ValueError, AttributeError):
                continue
            if kind == "job_inserted":
                self._wake_pending = True  # one wake per child per turn is enough
            else:
                lines.append((channel, payload))
        if self._wake_pending:
            lines.append(wakepipe.JOB_INSERTED)
            self._wake_pending = False
        if lines and self.config.listen_notify:
            data = wakepipe.encode(lines)
            for child in self.children.values():
                wakepipe.send_wake(child.wake_fd, data)

    # ------------------------------------------------------------ periodic

    def _periodic(self) -> None:
        self._recover_pending()
        now = time.monotonic()
        self._log_ready()
        views = {c.pid: self.scoreboard.read(c.slot) for c in self.children.values()}
        # A new child's worker id goes to the fleet table at once: a successor
        # supervisor finds its jobs there if this whole process tree dies.
        worker_ids = frozenset(v.worker_id for v in views.values() if v.worker_id)
        if now < self._next_heartbeat and worker_ids <= self._recorded_worker_ids:
            return
        self._recorded_worker_ids = worker_ids
        self._next_heartbeat = now + self.config.heartbeat_interval
        fresh = [
            v.worker_id for v in views.values()
            if v.worker_id and not policy.is_wedged(v.heartbeat_age(now), self.config.child_timeout)
        ]
        rows = [
            fleet.ChildRow(
                slot=c.slot, pid=c.pid, worker_id=views[c.pid].worker_id,
                state=views[c.pid].state.name.lower(), job_id=views[c.pid].job_id,
                task_name=views[c.pid].task_name, jobs_done=views[c.pid].jobs_done,
                job_ids=[job.job_id for job in views[c.pid].jobs],
                restarts=self.history.get(c.slot, policy.SlotHistory()).restarts,
                rss_bytes=views[c.pid].rss_bytes or None, started_at=c.started_at,
                heartbeat_age=views[c.pid].heartbeat_age(now),
                job_age=views[c.pid].job_age(now),
            )
            for c in self.children.values()
        ]
        assert self.supervisor_row is not None
        supervisor_row = self.supervisor_row

        def beat(conn: Any) -> bool:
            fleet.heartbeat(
                conn, supervisor_id=supervisor_row, host=self.config.hostname,
                state=self.phase.value, crash_loop=self.crash_looping,
                concurrency=self.target, children=rows, fresh_worker_ids=fresh,
            )
            return True

        ok = bool(self.db.run(beat))
        ended = time.monotonic()
        self.heartbeats = policy.record_heartbeat(
            self.heartbeats, ok, ended, self.config.heartbeat_interval
        )
        if not ok or now < self._next_sweep:
            return
        self._next_sweep = now + self.config.heartbeat_interval
        judgement = recovery.Judgement(
            healthy_for=self.heartbeats.healthy_for(ended),
            slack=policy.judgement_slack(self.config.heartbeat_interval),
            own_timeout=self.config.stalled_timeout,
            own_interval=self.config.heartbeat_interval,
            stock_timeout=self.config.stock_worker_timeout,
        )
        swept = self.db.run(lambda conn: recovery.sweep_stalled(
            conn, judgement=judgement, max_crash_retries=self.config.max_crash_retries,
        ))
        if swept:
            self._request_wake()
        self.db.run(lambda conn: fleet.prune(
            conn, judgement=judgement.params(), retention=fleet.DEFAULT_RETENTION,
        ))

    def _log_ready(self) -> None:
        if self.ready_logged or self.phase is not Phase.RUNNING:
            return
        states = [self.scoreboard.read(c.slot).state for c in self.children.values()]
        if len(states) == self.target and all(s in (State.IDLE, State.BUSY) for s in states):
            self.ready_logged = True
            logger.info("All %d children ready", self.target,
                        extra={"action": "fleet_ready"})

    def all_ready(self) -> bool:
        return self.ready_logged

    # --------------------------------------------------------------- sleep

    def _sleep(self) -> None:
        timeout = TICK
        if self.respawn_at and self.phase is Phase.RUNNING:
            timeout = min(timeout, max(0.0, min(self.respawn_at.values()) - time.monotonic()))
        if self._signals or self._wake_pending:
            timeout = 0
        fds = [self._sig_r]
        db_fd = self.db.fileno()
        if db_fd is not None:
            fds.append(db_fd)
        if self.probe is not None:
            fds.extend(self.probe.filenos())
        try:
            readable, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return
        if self.probe is not None:
            self.probe.handle(readable)
        if self._sig_r in readable:
            try:
                while os.read(self._sig_r, 512):
                    pass
            except BlockingIOError:
                pass

    # -------------------------------------------------------------- finish

    def _finish(self) -> None:
        for pending in self.unrecovered:
            pending.next_attempt = 0.0  # a last attempt for each, backoff or not
        self._recover_pending()
        if self.supervisor_row is not None:
            row = self.supervisor_row
            self.db.run(lambda conn: fleet.mark_stopped(conn, row))
        if self.unrecovered:
            logger.error(
                "%d dead child(ren)'s jobs could not be recovered (database down); "
                "the stalled-job sweep of any supervisor will retry them",
                len(self.unrecovered), extra={"action": "recovery_deferred"},
            )
        if self.probe is not None:
            self.probe.close()
        self.db.close()
        logger.info("Supervisor stopped", extra={"action": "supervisor_stopped"})

    def _title(self) -> str:
        queues = ",".join(self.config.queues) if self.config.queues else "all queues"
        return (
            f"procrastinate-prefork supervisor [{self.phase.value}] "
            f"{self.target} children, {queues} ({self.config.hostname})"
        )
