"""Maintenance of the fleet table on every turn of the loop: heartbeats
(or, between them, the running jobs), the live page's events, the
stalled-job sweep and the pruning, and the supervisor's own row.

It owns the supervisor's row, its heartbeat and sweep clocks, its own
heartbeat series (what the sweep may conclude from others' silence) and the
outbox of events. It is given the database session, the clock, the totals,
a snapshot of the supervisor on each turn, ``on_recovered`` (the sweep's
jobs are counted like the recoveries') and ``wake``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..config import PreforkConfig
from ..fleet import events, queries, recovery
from ..fleet import table as fleet
from ..fleet.snapshot import FleetSnapshot
from ..observability import metrics
from . import db as db_module
from . import policy
from .recovering import Outbox
from .system import System

logger = logging.getLogger("procrastinate_prefork.supervisor")

#: a turn to sweep is free once this share of our heartbeat interval has
#: passed since the fleet's last sweep: our own beats drift by a few
#: milliseconds, and must not miss the turn they come for
SWEEP_TURN_SHARE = 0.9


class Maintenance:
    def __init__(
        self,
        config: PreforkConfig,
        db: db_module.SupervisorDB,
        system: System,
        totals: metrics.Totals,
        outbox: Outbox,
        on_recovered: Callable[[list[recovery.Recovery]], None],
        wake: Callable[[], None],
    ):
        self.config = config
        self.db = db
        self.system = system
        self.totals = totals
        self.outbox = outbox
        self.on_recovered = on_recovered
        self.wake = wake
        self.supervisor_row: int | None = None  # registered by the start-up
        #: the queues of all its pools (None: every queue), for the events
        self.queues = config.queues
        self.queue_depth = False  # read the queues' depth for /metrics
        self.next_heartbeat: float = 0.0
        self.next_sweep: float = 0.0
        #: our own heartbeats: what the sweep may conclude from others' silence
        self.heartbeats: policy.HeartbeatSeries = policy.HeartbeatSeries()
        self.recorded_worker_ids: frozenset[int] = frozenset()
        self.jobs_written: policy.JobsWritten = policy.JobsWritten()

    def tick(self, snapshot: FleetSnapshot, now: float) -> None:
        # A new child's worker id goes to the fleet table at once: a successor
        # supervisor finds its jobs there if this whole process tree dies.
        worker_ids = frozenset(c.worker_id for c in snapshot.children if c.worker_id)
        assert self.supervisor_row is not None  # noqa: S101 - set by start()
        supervisor_row = self.supervisor_row
        jobs = snapshot.running_jobs()
        if now < self.next_heartbeat and worker_ids <= self.recorded_worker_ids:
            # Between heartbeats, the running jobs only (a job that ended is
            # gone from the table within about a second, not a heartbeat).
            if policy.jobs_write_due(self.jobs_written, jobs, now):
                self.db.run(
                    lambda conn: fleet.write_jobs(
                        conn, supervisor_id=supervisor_row, snapshot=snapshot
                    )
                )
                # written or not (an outage): the gap holds either way
                self.jobs_written = policy.JobsWritten(jobs, now)
            return
        self.recorded_worker_ids = worker_ids
        self.next_heartbeat = now + self.config.heartbeat_interval

        def beat(conn: Any) -> bool:
            fleet.heartbeat(
                conn,
                supervisor_id=supervisor_row,
                snapshot=snapshot,
                per_minute=self.totals.per_minute,
            )
            return True

        ok = bool(self.db.run(beat))
        self.jobs_written = policy.JobsWritten(jobs, now)
        ended = self.system.monotonic()
        self.heartbeats = policy.record_heartbeat(
            self.heartbeats, ok, ended, self.config.heartbeat_interval
        )
        if not ok or now < self.next_sweep:
            return
        self.next_sweep = now + self.config.heartbeat_interval
        if self.queue_depth and metrics.available():
            self._read_queue_depth(supervisor_row)
        self._sweep(ended)

    def _read_queue_depth(self, supervisor_row: int) -> None:
        """Here, once per heartbeat interval (a scrape never queries): the
        counts one supervisor of the fleet counts per interval (they read
        procrastinate's job table), counted here when it is our turn."""
        interval = self.config.heartbeat_interval * SWEEP_TURN_SHARE
        read = self.db.run(
            lambda conn: fleet.queue_jobs(
                conn, supervisor_id=supervisor_row, interval=interval
            )
        )
        if read is None:
            return  # none counted yet, or the database is down
        rows, age, counted = read
        if counted:
            logger.debug(
                "Counted the queues' jobs for the fleet",
                extra={"action": "queue_depth_counted"},
            )
        self.totals.read_queue_depth(rows, age)

    def _sweep(self, ended: float) -> None:
        healthy_for = self.heartbeats.healthy_for(ended)
        if not policy.may_take_sweep_turn(
            healthy_for, self.config.stalled_timeout, self.config.stock_worker_timeout
        ):
            return
        if not self.db.run(self._claim_sweep):
            return  # another supervisor swept for the fleet less than a beat ago
        logger.debug("Sweeping for the fleet", extra={"action": "sweep_turn"})
        judgement = recovery.Judgement(
            healthy_for=healthy_for,
            slack=policy.judgement_slack(self.config.heartbeat_interval),
            own_timeout=self.config.stalled_timeout,
            own_interval=self.config.heartbeat_interval,
            stock_timeout=self.config.stock_worker_timeout,
        )
        swept = self.db.run(
            lambda conn: recovery.sweep_stalled(
                conn,
                judgement=judgement,
                max_crash_retries=self.config.max_crash_retries,
            )
        )
        if swept:
            self.on_recovered(swept)
            self.wake()
        self.db.run(
            lambda conn: fleet.prune(
                conn,
                judgement=judgement.params(),
                retention=fleet.DEFAULT_RETENTION,
            )
        )

    def _claim_sweep(self, conn: Any) -> bool:
        """Whether this supervisor takes the fleet's turn to sweep and prune.
        Both judge the whole fleet table, so a turn per heartbeat interval
        for the fleet, not per host, keeps the database's cost flat in the
        number of hosts."""
        claimed = conn.execute(
            queries.get("claim_sweep"),
            {"interval": self.config.heartbeat_interval * SWEEP_TURN_SHARE},
        ).fetchone()
        return claimed is not None

    def write_events(self) -> None:
        """Deaths and recoveries for the live page: one statement for those
        of a turn; kept for a later turn while the database is down."""
        if not self.outbox.pending:
            return
        pending = self.outbox.pending
        written = self.db.run(
            lambda conn: events.write(
                conn,
                host=self.config.hostname,
                supervisor_id=self.supervisor_row,
                queues=self.queues,
                events=pending,
            )
        )
        if written or self.db.is_up:  # an error other than an outage: dropped
            self.outbox.pending = []

    def mark_stopped(self) -> None:
        if self.supervisor_row is not None:
            row = self.supervisor_row
            self.db.run(lambda conn: fleet.mark_stopped(conn, row))
