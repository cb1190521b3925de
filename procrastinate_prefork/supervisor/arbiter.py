"""The arbiter: one single-threaded loop that forks, reaps, recovers and
re-forks children, forwards wake-ups to them and keeps the fleet table fresh.

Signals are only queued by their handlers and handled in the loop, which
sleeps in ``select`` on a self-pipe (``signal.set_wakeup_fd``), the database
session and the probe socket. Nothing here blocks on one child.

The loop is here; each part it calls is an object of its own, which owns the
state it changes and is given what it reads: ``pool.Pool`` (children, slots,
respawns, size: one per pool of ``config.pools``, built by ``pools``, each
with its pool's configuration and its own slots), ``lifecycle.Lifecycle``
(phase, drain deadline, what each signal means), ``signals.Signals``
(queue, self-pipe), ``reaping.Reaper``, ``deadlines.Police``,
``scaling.Autoscaler`` and ``poller.Poller`` (one of each per pool),
``recovering.Recovery`` and ``maintenance.Maintenance``; ``startup`` checks
before the first fork.
``system`` is what they ask of the OS and the clock.
"""

from __future__ import annotations

import logging
import os
import select
from collections.abc import Callable
from typing import Any

from ..child.bootstrap import Bootstrap
from ..config import PreforkConfig
from ..fleet import health
from ..fleet import snapshot as fleet_snapshot
from ..observability import liveprobe, metrics, probe
from . import db, pools, reaping, startup
from .children import Child, Forker, Phase
from .deadlines import Police
from .lifecycle import Lifecycle
from .maintenance import Maintenance
from .poller import Poller
from .pool import ForkFailed, Pool
from .reaping import Reaper
from .recovering import Outbox, Recovery
from .scaling import Autoscaler
from .signals import Signals, handler_name
from .startup import StartupError
from .system import System

__all__ = ["Phase", "StartupError", "Supervisor"]

logger = logging.getLogger("procrastinate_prefork.supervisor")

TICK = 0.25  # longest sleep of the loop: wedge and deadline checks


class Supervisor:
    def __init__(
        self,
        config: PreforkConfig,
        bootstrap: Bootstrap,
        *,
        on_child_start: Callable[..., Any] | None = None,
        on_child_exit: Callable[..., Any] | None = None,
        system: System | None = None,
        session: db.SupervisorDB | None = None,
    ):
        self.config = config
        self.bootstrap = bootstrap
        self.system = system = system or System()
        self.pid: int = os.getpid()
        self.started: float = system.monotonic()
        self._wake_pending = False
        self.probe: probe.ProbeServer | None = None  # --health-port
        self.live_probe: liveprobe.LiveProbe | None = None  # its /live
        self.totals = metrics.Totals(label_limit=config.metrics_label_limit)
        self.scoreboard = pools.scoreboard_for(config)
        self.db = session or db.SupervisorDB(
            bootstrap.connection_args(),
            db.application_name(config.hostname, "sup", self.pid),
            db.pool_channels(pools.listen_queues(config)),
            timeouts=db.Timeouts.for_heartbeat(config.heartbeat_interval),
        )
        self.db.on_connect = self._request_wake
        self.signals = Signals()
        forker = Forker(
            *(system, config, bootstrap, self.scoreboard, self.pid, self._own_fds),
            on_start=on_child_start,
            supervisor_row=lambda: self.maintenance.supervisor_row,
        )
        self.pools = pools.build(config, system, self.scoreboard, forker)
        self.lifecycle = Lifecycle(config, system, self.pools)
        self.police = [Police(p.config, self.scoreboard, p.kill) for p in self.pools]
        board, start, sdb = self.scoreboard, self.started, self.db
        self.autoscalers = [Autoscaler(p.config, sdb, board, start) for p in self.pools]
        self.pollers = [Poller.of(a, sdb, board) for a in self.autoscalers]
        outbox, wake, totals = Outbox(), self._request_wake, self.totals
        self.recovery = Recovery(
            config, self.db, system, bootstrap.app, totals, outbox, wake
        )
        self.reaper = Reaper(
            system, self.scoreboard, self.recovery, totals, outbox, on_child_exit
        )
        self.maintenance = Maintenance(
            config, self.db, system, totals, outbox, self.recovery.counted, wake
        )
        self.maintenance.queues = pools.queues(self.pools)

    def run(self) -> int:
        # the probe process is the first fork: no pool thread may run then
        self.bootstrap.before_fork()
        self.probe, self.live_probe = startup.open_probes(
            self.config, self.db, self.snapshot, self.metrics_text
        )
        self.maintenance.queue_depth = self.probe is not None
        self.maintenance.supervisor_row = startup.preflight(
            self.config,
            self.bootstrap,
            self.db,
            pid=self.pid,
            concurrency=pools.concurrency(self.pools),
            queues=self.maintenance.queues,
            live_probe=self.live_probe,
        )
        self.signals.install()
        self.lifecycle.retitle()
        pools.start(self.pools)
        try:
            self._spawn_due(at_start=True)
        except StartupError:
            self._reap_all()  # the ones forked before the failure
            self._finish()
            raise
        try:
            while not self._finished():
                self._turn()
                self._sleep()
        except Exception:
            logger.exception(
                "Supervisor failed; stopping its children",
                extra={"action": "supervisor_crashed"},
            )
            self.lifecycle.stop_now("supervisor failure")
            self._reap_all()
            self._finish()
            return 1
        self._finish()
        return 0

    def _turn(self) -> None:
        while (signum := self.signals.pop()) is not None:
            getattr(self.lifecycle, handler_name(signum))()
        self._reap()
        for pool, police in zip(self.pools, self.police, strict=True):
            police.patrol(pool.children.values(), self._now())
        self._scale()
        self._spawn_due()
        self.pool.designate_deferrer()
        self._forward_wakeups()
        self._periodic()
        self.lifecycle.retitle()

    def _now(self) -> float:
        return self.system.monotonic()

    @property
    def pool(self) -> Pool:  # the first: the only one of a fleet without pools
        return self.pools[0]

    def _children(self) -> list[Child]:
        return pools.children(self.pools)

    def _reap(self) -> None:
        strays = self.reaper.reap(self.pools, running=self.lifecycle.running)
        for pid, status in strays:
            if self.live_probe is not None and pid == self.live_probe.pid:
                reaping.probe_exited(self.live_probe, status)

    def _reap_all(self) -> None:
        while self._children():
            self._reap()
            self.system.sleep(0.05)

    def _finished(self) -> bool:
        if self._children():
            return False
        if not self.lifecycle.running:
            return True
        # one-shot: every child is done
        return not any(pool.respawn_at for pool in self.pools)

    def _scale(self) -> None:
        """Converge to the target (hand-overs, sizes), then autoscale."""
        if not self.lifecycle.running:
            return
        for pool, autoscaler in zip(self.pools, self.autoscalers, strict=True):
            pool.converge()
            autoscaler.look(pool, self._now())
            pool.converge()

    def _spawn_due(self, at_start: bool = False) -> None:
        if not self.lifecycle.running:
            return
        now = self._now()
        due = [(pool, pool.due(now)) for pool in self.pools]
        if not any(slots for _, slots in due):
            return
        # The session must not be inherited: close it, fork them all, reopen.
        self.db.close()
        self.bootstrap.before_fork()
        self.bootstrap.check_fork_safety()
        try:
            for pool, slots_due in due:
                pool.spawn(slots_due, now, at_start=at_start)
        except ForkFailed as failed:  # at start only
            self.lifecycle.stop_now("fork failed")
            raise StartupError(f"cannot fork child {failed.slot}: {failed}") from None
        self.db.ensure()  # LISTEN again at once: wake-ups must not wait

    def _own_fds(self) -> list[int]:
        probe_fds = self.probe.own_fds() if self.probe is not None else []
        return [
            *self.signals.fds(),
            *probe_fds,
            *(c.wake_fd for c in self._children()),
        ]

    def _request_wake(self) -> None:
        self._wake_pending = True

    def _forward_wakeups(self) -> None:
        wake, self._wake_pending = self._wake_pending, False
        pools.forward(self.pools, self.db.notifications(), wake)
        if self.lifecycle.running:
            pools.poll(self.pools, self.pollers, self._now(), self.scoreboard, self.db)

    def _periodic(self) -> None:
        self.recovery.run()
        self.maintenance.write_events()
        self._drain_metrics()
        if self.lifecycle.running:
            pools.log_ready(self.pools)
        now = self._now()
        snapshot = self._snapshot(now)
        if self.live_probe is not None:  # a turn: the helper's /live
            verdict = health.liveness(snapshot)
            self.live_probe.beacon.publish(verdict.ok, list(verdict.reasons))
        self.maintenance.tick(snapshot, now)

    def _sleep(self) -> None:
        timeout = TICK
        next_fork = pools.next_fork_in(self.pools, self._now())
        if next_fork is not None and self.lifecycle.running:
            timeout = min(timeout, next_fork)
        if self.signals.queued or self._wake_pending:
            timeout = 0
        fds = [self.signals.read_fd]
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
        self.signals.clear_pipe(readable)

    def _finish(self) -> None:
        self.recovery.last_attempt()
        self.maintenance.write_events()
        self.maintenance.mark_stopped()
        self.recovery.report_deferred()
        if self.live_probe is not None:
            self.live_probe.stop()
        if self.probe is not None:
            self.probe.close()
        self.db.close()
        logger.info("Supervisor stopped", extra={"action": "supervisor_stopped"})

    def _snapshot(self, now: float) -> fleet_snapshot.FleetSnapshot:
        return fleet_snapshot.take(
            self.config,
            self.pools,
            self.scoreboard,
            pid=self.pid,
            phase=self.lifecycle.phase.value,
            database_up=self.db.is_up,
            uptime=now - self.started,
            now=now,
        )

    def snapshot(self) -> fleet_snapshot.FleetSnapshot:
        return self._snapshot(self._now())

    def _drain_metrics(self) -> None:
        for child in self._children():
            metrics.drain(self.scoreboard.finished, child.slot, self.totals)

    def metrics_text(self) -> str:
        self._drain_metrics()
        return metrics.render(self.snapshot(), self.totals)
