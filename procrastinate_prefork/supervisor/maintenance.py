# A part of ``Supervisor``: its methods take ``self: Supervisor`` so that mypy
# checks them against the whole class; mypy reports such self-types of a mixin
# as "erased type of self" (misc), which is what it is meant to be here.
# mypy: disable-error-code="misc"
"""Maintenance on every turn of the loop: dead children's jobs recovered
(retried with backoff when the database errs), heartbeats, the stalled-job
sweep and the pruning of the fleet table."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import logging
from typing import TYPE_CHECKING, Any

from procrastinate import jobs as jobs_module

from ..child.scoreboard import State
from ..fleet import events, health, queries, recovery
from ..fleet import table as fleet
from ..fleet.snapshot import take as take_snapshot
from ..observability import metrics
from . import policy
from .children import Phase

if TYPE_CHECKING:
    from .arbiter import Supervisor

logger = logging.getLogger("procrastinate_prefork.supervisor")

#: first and longest wait before trying again a recovery that failed while the
#: database answered (an error, not an outage)
RECOVERY_RETRY_MIN, RECOVERY_RETRY_MAX = 1.0, 30.0
#: a turn to sweep is free once this share of our heartbeat interval has
#: passed since the fleet's last sweep: our own beats drift by a few
#: milliseconds, and must not miss the turn they come for
SWEEP_TURN_SHARE = 0.9


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


def retry_delay(failures: int) -> float:
    """The wait before the next attempt of a recovery that failed
    ``failures`` times in a row."""
    return min(RECOVERY_RETRY_MAX, RECOVERY_RETRY_MIN * 2.0 ** (failures - 1))


class Maintenance:
    """Recovery, heartbeats, sweeps and prunes (a part of ``Supervisor``)."""

    def _periodic(self: Supervisor) -> None:
        self._recover_pending()
        self._write_events()
        for child in self.children.values():
            metrics.drain(self.scoreboard.finished, child.slot, self.totals)
        now = self.system.monotonic()
        self._log_ready()
        snapshot = take_snapshot(self, now)
        if self.live_probe is not None:  # a turn: the helper's /live
            verdict = health.liveness(snapshot)
            self.live_probe.beacon.publish(verdict.ok, list(verdict.reasons))
        # A new child's worker id goes to the fleet table at once: a successor
        # supervisor finds its jobs there if this whole process tree dies.
        worker_ids = frozenset(c.worker_id for c in snapshot.children if c.worker_id)
        assert self.supervisor_row is not None  # noqa: S101 - set by start()
        supervisor_row = self.supervisor_row
        jobs = snapshot.running_jobs()
        if now < self._next_heartbeat and worker_ids <= self._recorded_worker_ids:
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
        self._recorded_worker_ids = worker_ids
        self._next_heartbeat = now + self.config.heartbeat_interval

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
        if not ok or now < self._next_sweep:
            return
        self._next_sweep = now + self.config.heartbeat_interval
        if self.probe is not None and metrics.available():
            # here, once per heartbeat interval: a scrape never queries
            rows = self.db.run(
                lambda conn: conn.execute(queries.get("queue_jobs")).fetchall()
            )
            if rows is not None:
                self.totals.read_queue_depth(rows)
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
            self._count_recovered(swept)
            self._request_wake()
        self.db.run(
            lambda conn: fleet.prune(
                conn,
                judgement=judgement.params(),
                retention=fleet.DEFAULT_RETENTION,
            )
        )

    def _claim_sweep(self: Supervisor, conn: Any) -> bool:
        """Whether this supervisor takes the fleet's turn to sweep and prune.
        Both judge the whole fleet table, so a turn per heartbeat interval
        for the fleet, not per host, keeps the database's cost flat in the
        number of hosts."""
        claimed = conn.execute(
            queries.get("claim_sweep"),
            {"interval": self.config.heartbeat_interval * SWEEP_TURN_SHARE},
        ).fetchone()
        return claimed is not None

    def _log_ready(self: Supervisor) -> None:
        if self.ready_logged or self.phase is not Phase.RUNNING:
            return
        states = [self.scoreboard.read(c.slot).state for c in self.children.values()]
        ready = all(s in (State.IDLE, State.BUSY) for s in states)
        if len(states) == self.concurrency and ready:
            self.ready_logged = True
            logger.info(
                "All %d children ready",
                self.concurrency,
                extra={"action": "fleet_ready"},
            )

    def _recover_pending(self: Supervisor) -> None:
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
                    timeout_retry=self._timeout_retry,
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
            self._count_recovered(done)
            if any(r.action is recovery.Action.RETRIED for r in done):
                self._request_wake()

    def _count_recovered(self: Supervisor, done: list[recovery.Recovery]) -> None:
        """Jobs of dead processes: put back (``recovered``) or ended here."""
        for result in done:
            outcome = result.action.value
            if result.action is recovery.Action.RETRIED:
                outcome = "recovered"
            self.totals.job(result.queue, result.task_name, outcome)
        self.events_pending = events.keep(
            self.events_pending,
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
            ],
        )

    def _write_events(self: Supervisor) -> None:
        """Deaths and recoveries for the live page: one statement for those
        of a turn; kept for a later turn while the database is down."""
        if not self.events_pending:
            return
        pending = self.events_pending
        written = self.db.run(
            lambda conn: events.write(
                conn,
                host=self.config.hostname,
                supervisor_id=self.supervisor_row,
                queues=self.config.queues,
                events=pending,
            )
        )
        if written or self.db.is_up:  # an error other than an outage: dropped
            self.events_pending = []

    def _timeout_retry(
        self: Supervisor, row: dict[str, Any]
    ) -> tuple[bool, datetime.datetime | None]:
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
