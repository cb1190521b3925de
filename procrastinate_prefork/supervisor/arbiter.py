"""The arbiter: one single-threaded loop that forks, reaps, recovers and
re-forks children, forwards wake-ups to them and keeps the fleet table fresh.

Signals are only queued by their handlers and handled in the loop, which
sleeps in ``select`` on a self-pipe (``signal.set_wakeup_fd``), the database
session and the probe socket. Nothing here blocks on one child.

The loop is here; each part it calls has a module of its own: ``startup``
(checks, predecessors), ``signals`` (``handle_<signal>``), ``reaping``
(deaths, backoff, crash loops), ``policing`` (deadlines, wedges, time limits),
``scaling`` (sizes, generations, retirements) and ``maintenance`` (recovery,
heartbeats, sweeps). ``system`` is what it asks of the OS and the clock.
"""

from __future__ import annotations

import logging
import os
import select
from collections.abc import Callable
from typing import Any

import psycopg
import setproctitle

from .. import errors
from ..child import wakepipe
from ..child.bootstrap import Bootstrap
from ..child.runner import ChildSpec
from ..child.scoreboard import Scoreboard
from ..config import PreforkConfig
from ..config.parsing import MAX_CHILDREN
from ..fleet import events
from ..fleet import table as fleet
from ..fleet.snapshot import FleetSnapshot
from ..fleet.snapshot import take as take_snapshot
from ..observability import liveprobe, metrics, probe
from . import db, policy
from .children import Child, Phase, fork_child
from .deadlines import Policing
from .maintenance import Maintenance, PendingRecovery
from .reaping import Reaping
from .scaling import Scaling
from .signals import SignalHandling
from .startup import Startup, StartupError
from .system import System

__all__ = ["Phase", "StartupError", "Supervisor"]

logger = logging.getLogger("procrastinate_prefork.supervisor")

TICK = 0.25  # longest sleep of the loop: wedge and deadline checks


class Supervisor(Startup, SignalHandling, Reaping, Policing, Scaling, Maintenance):
    def __init__(
        self,
        config: PreforkConfig,
        bootstrap: Bootstrap,
        *,
        on_child_start: Callable[..., Any] | None = None,
        on_child_exit: Callable[..., Any] | None = None,
        system: System | None = None,
    ):
        self.config = config
        self.bootstrap = bootstrap
        self.app = bootstrap.app
        self.system: System = system or System()
        self.pid: int = os.getpid()
        #: children wanted now: --concurrency, or autoscale's low end at first
        self.concurrency: int = (
            config.autoscale[0] if config.autoscale else config.concurrency
        )
        self.generation: int = 0
        self.started: float = self.system.monotonic()
        self._quiet_since: float = self.started
        self._next_autoscale: float = 0.0
        self.on_child_start = on_child_start
        self.on_child_exit = on_child_exit
        self.children: dict[int, Child] = {}
        self.history: dict[int, policy.SlotHistory] = {}
        self.respawn_at: dict[int, float] = {}
        self.unrecovered: list[PendingRecovery] = []
        self.phase: Phase = Phase.RUNNING
        self.deadline: float | None = None
        self.crash_looping: bool = False
        self.supervisor_row: int | None = None
        self.scoreboard = Scoreboard(2 * MAX_CHILDREN, config.child_concurrency)
        self._signals: list[int] = []
        self._sig_r: int = -1
        self._sig_w: int = -1
        self._next_heartbeat: float = 0.0
        self._next_sweep: float = 0.0
        #: our own heartbeats: what the sweep may conclude from others' silence
        self.heartbeats: policy.HeartbeatSeries = policy.HeartbeatSeries()
        self._wake_pending = False
        self._recorded_worker_ids: frozenset[int] = frozenset()
        self.jobs_written: policy.JobsWritten = policy.JobsWritten()
        self.events_pending: list[events.Event] = []  # for the live page
        self.ready_logged: bool = False
        self.probe: probe.ProbeServer | None = None  # --health-port
        self.live_probe: liveprobe.LiveProbe | None = None  # its /live
        self.totals = metrics.Totals(label_limit=config.metrics_label_limit)
        self.db_timeouts: db.Timeouts = db.Timeouts.for_heartbeat(
            config.heartbeat_interval
        )
        self.db: db.SupervisorDB = db.SupervisorDB(
            bootstrap.connection_args(),
            db.application_name(config.hostname, "sup", self.pid),
            db.listen_channels(config.queues) if config.listen_notify else [],
            timeouts=self.db_timeouts,
        )
        self.db.on_connect = self._request_wake

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
        for slot in range(self.concurrency):
            self.respawn_at[slot] = 0.0
        try:
            self._spawn_due(at_start=True)
        except StartupError:
            self._reap_all()  # the ones forked before the failure
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
            logger.exception(
                "Supervisor failed; stopping its children",
                extra={"action": "supervisor_crashed"},
            )
            self._stop_now("supervisor failure")
            self._reap_all()
            self._finish()
            return 1
        self._finish()
        return 0

    def _reap_all(self) -> None:
        while self.children:
            self._reap()
            self.system.sleep(0.05)

    def _finished(self) -> bool:
        if self.children:
            return False
        if self.phase is not Phase.RUNNING:
            return True
        return not self.respawn_at  # one-shot: every child is done

    def _spawn_due(self, at_start: bool = False) -> None:
        if self.phase is not Phase.RUNNING:
            return
        now = self.system.monotonic()
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
                logger.error(
                    "Cannot fork child %s: %s; retrying",
                    slot,
                    exc,
                    extra={"action": "fork_failed", "slot": slot},
                )
                self.respawn_at[slot] = now + 1.0
                break
            del self.respawn_at[slot]
        self.db.ensure()  # LISTEN again at once: wake-ups must not wait

    def _spawn(self, slot: int) -> None:
        def spec(wake_r: int) -> ChildSpec:
            return ChildSpec(
                slot=slot,
                config=self.config,
                bootstrap=self.bootstrap,
                scoreboard=self.scoreboard,
                wake_fd=wake_r if self.config.listen_notify else None,
                supervisor_pid=self.pid,
                inherited_fds=self._own_fds(),
                on_start=self.on_child_start,
            )

        child = fork_child(
            self.system,
            slot,
            scoreboard=self.scoreboard,
            generation=self.generation,
            spec=spec,
        )
        self.children[child.pid] = child

    def _own_fds(self) -> list[int]:
        probe_fds = self.probe.own_fds() if self.probe is not None else []
        return [
            self._sig_r,
            self._sig_w,
            *probe_fds,
            *(c.wake_fd for c in self.children.values()),
        ]

    def _request_wake(self) -> None:
        self._wake_pending = True

    def _forward_wakeups(self) -> None:
        lines = wakepipe.to_forward(self.db.notifications(), self._wake_pending)
        self._wake_pending = False
        if lines and self.config.listen_notify:
            data = wakepipe.encode(lines)
            for child in self.children.values():
                wakepipe.send_wake(child.wake_fd, data)

    def _sleep(self) -> None:
        timeout = TICK
        if self.respawn_at and self.phase is Phase.RUNNING:
            timeout = min(
                timeout,
                max(0.0, min(self.respawn_at.values()) - self.system.monotonic()),
            )
        if self._signals or self._wake_pending:
            timeout = 0
        fds = [self._sig_r]
        db_fd = self.db.fileno()
        if db_fd is not None:
            fds.append(db_fd)
        writers = [db_fd] if db_fd is not None and self.db.wants_write() else []
        if self.probe is not None:
            fds.extend(self.probe.filenos())
        try:
            readable, _, _ = select.select(fds, writers, [], timeout)
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

    def _finish(self) -> None:
        for pending in self.unrecovered:
            pending.next_attempt = 0.0  # a last attempt for each, backoff or not
        self._recover_pending()
        self._write_events()
        if self.supervisor_row is not None:
            row = self.supervisor_row
            self.db.run(lambda conn: fleet.mark_stopped(conn, row))
        if self.unrecovered:
            logger.error(
                "%d dead child(ren)'s jobs could not be recovered (database down); "
                "the stalled-job sweep of any supervisor will retry them",
                len(self.unrecovered),
                extra={"action": "recovery_deferred"},
            )
        if self.live_probe is not None:
            self.live_probe.stop()
        if self.probe is not None:
            self.probe.close()
        self.db.close()
        logger.info("Supervisor stopped", extra={"action": "supervisor_stopped"})

    def snapshot(self) -> FleetSnapshot:
        return take_snapshot(self, self.system.monotonic())

    def metrics_text(self) -> str:
        for child in self.children.values():
            metrics.drain(self.scoreboard.finished, child.slot, self.totals)
        return metrics.render(self.snapshot(), self.totals)

    def _title(self) -> str:
        queues = ",".join(self.config.queues) if self.config.queues else "all queues"
        return (
            f"procrastinate-prefork supervisor [{self.phase.value}] "
            f"{self.concurrency} children, {queues} ({self.config.hostname})"
        )
