"""Each part of the supervisor on its own (issue 23): built from what it is
given (a fake ``System`` for fork, waitpid, kill and the clock; a database
session that never answers or answers what the test says), no
``Supervisor`` anywhere. Assertions are on the part's state, the signals
sent and the ``action`` of log records."""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import pytest

from procrastinate_prefork.child.scoreboard import Scoreboard, SlotWriter, State
from procrastinate_prefork.config import build_config
from procrastinate_prefork.config.parsing import MAX_CHILDREN
from procrastinate_prefork.fleet import recovery as fleet_recovery
from procrastinate_prefork.fleet.snapshot import ChildSnapshot, FleetSnapshot
from procrastinate_prefork.observability import metrics
from procrastinate_prefork.supervisor import recovering
from procrastinate_prefork.supervisor.children import Child, Phase
from procrastinate_prefork.supervisor.deadlines import TIME_LIMIT_GRACE, Police
from procrastinate_prefork.supervisor.lifecycle import Lifecycle
from procrastinate_prefork.supervisor.maintenance import Maintenance
from procrastinate_prefork.supervisor.pool import KILL_MARGIN, ForkFailed, Pool
from procrastinate_prefork.supervisor.reaping import Reaper
from procrastinate_prefork.supervisor.recovering import (
    Outbox,
    PendingRecovery,
    Recovery,
)
from procrastinate_prefork.supervisor.scaling import Autoscaler

from .supervisor_fakes import DownDB, FakeApp, FakeSystem, exited, killed


@pytest.fixture(autouse=True)
def _no_title(monkeypatch):
    monkeypatch.setattr("setproctitle.setproctitle", lambda title: None)


@pytest.fixture
def caplog_info(caplog):
    caplog.set_level(logging.INFO, logger="procrastinate_prefork")
    return caplog


def actions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "action", None) for r in caplog.records if hasattr(r, "action")]


class Parts:
    """A pool and what it is given: children are pids with a real pipe."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("concurrency", 2)
        options.setdefault("hostname", "test-host")
        self.config = build_config(options, {})
        self.system = FakeSystem()
        self.board = Scoreboard(2 * MAX_CHILDREN, self.config.child_concurrency)
        self.pool = Pool(self.config, self.system, self.board, self.fork)
        self.fds: list[int] = []

    def fork(self, slot: int, generation: int) -> Child:
        pid = self.system.fork()
        read_fd, write_fd = os.pipe()
        os.close(read_fd)
        self.fds.append(write_fd)
        self.board.reset(slot)
        return Child(
            slot=slot,
            pid=pid,
            started=self.system.monotonic(),
            started_at=self.system.now(),
            wake_fd=write_fd,
            generation=generation,
        )

    def spawn_due(self) -> None:
        now = self.system.monotonic()
        self.pool.spawn(self.pool.due(now), now)

    def ready(self, *states: State) -> None:
        for child in self.pool.children.values():
            writer = SlotWriter(self.board, child.slot)
            writer.set_worker_id(child.pid)
            writer.set_state(states[0] if states else State.IDLE)

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass  # closed by the reaper


@pytest.fixture
def parts():
    made: list[Parts] = []

    def make(**options: Any) -> Parts:
        made.append(Parts(**options))
        return made[-1]

    yield make
    for each in made:
        each.close()


# --- Pool ---------------------------------------------------------------------


def test_pool_forks_its_target_and_a_failed_fork_waits_a_second(parts, caplog_info):
    p = parts(concurrency=2)
    p.pool.start()
    p.system.fail_forks = 1
    p.spawn_due()
    assert p.pool.children == {} and p.pool.respawn_at[0] == p.system.clock + 1.0
    assert "fork_failed" in actions(caplog_info)
    p.system.sleep(1.0)
    p.spawn_due()
    assert sorted(c.slot for c in p.pool.children.values()) == [0, 1]
    assert p.pool.respawn_at == {}


def test_pool_fork_failure_at_start_names_the_slot(parts):
    p = parts(concurrency=2)
    p.pool.start()
    p.system.fail_forks = 1
    with pytest.raises(ForkFailed) as failure:
        p.pool.spawn(p.pool.due(p.system.clock), p.system.clock, at_start=True)
    assert failure.value.slot == 0


def test_pool_backs_off_early_deaths_then_reports_a_crash_loop(parts, caplog_info):
    p = parts(concurrency=1)
    p.pool.start()
    delays = []
    for _ in range(3):
        p.spawn_due()
        (child,) = p.pool.children.values()
        p.pool.pop(child.pid)
        now = p.system.clock
        p.pool.replace(child, 1, now, had_job=False, running=True)
        delays.append(p.pool.respawn_at[0] - now)
        p.system.sleep(delays[-1])
    assert delays[0] < delays[1] < delays[2]
    assert p.pool.crash_looping and "crash_loop" in actions(caplog_info)


def test_pool_does_not_replace_a_child_while_stopping_nor_a_retired_one(parts):
    p = parts(concurrency=2)
    p.pool.start()
    p.spawn_due()
    first, second = p.pool.children.values()
    p.pool.pop(first.pid)
    p.pool.replace(first, 0, p.system.clock, had_job=False, running=False)
    second.retiring = True
    p.pool.pop(second.pid)
    p.pool.replace(second, 0, p.system.clock, had_job=False, running=True)
    assert p.pool.respawn_at == {}


def test_pool_rolls_a_new_generation_in_before_retiring_the_old(parts, caplog_info):
    p = parts(concurrency=2)
    p.pool.start()
    p.spawn_due()
    p.ready()
    old = set(p.pool.children)
    p.pool.rolling_restart()
    p.pool.converge()
    assert not any(c.retiring for c in p.pool.children.values())
    p.spawn_due()
    new = set(p.pool.children) - old
    assert len(new) == 2
    p.ready()  # all ready: the old generation goes
    p.pool.converge()
    assert {c.pid for c in p.pool.children.values() if c.retiring} == old
    assert sorted(pid for pid, sig in p.system.sent if sig == signal.SIGTERM) == (
        sorted(old)
    )


def test_pool_shrinks_by_retiring_an_idle_child_with_a_deadline(parts):
    p = parts(concurrency=2, shutdown_graceful_timeout=5)
    p.pool.start()
    p.spawn_due()
    p.ready()
    p.pool.shrink()
    p.pool.converge()
    (retiring,) = [c for c in p.pool.children.values() if c.retiring]
    assert retiring.slot == 1 and p.pool.target == 1
    assert retiring.kill.at == p.system.clock + 5 + KILL_MARGIN


# --- Lifecycle ----------------------------------------------------------------


def test_lifecycle_drains_then_a_second_stop_kills_at_once(parts, caplog_info):
    p = parts(concurrency=2, shutdown_graceful_timeout=5)
    p.pool.start()
    p.spawn_due()
    life = Lifecycle(p.config, p.system, [p.pool])
    life.handle_term()
    assert life.phase is Phase.DRAINING and life.deadline == p.system.clock + 5
    assert {sig for _, sig in p.system.sent} == {signal.SIGTERM}
    life.handle_ttin()  # no growth while draining
    assert p.pool.target == 2 and p.pool.respawn_at == {}
    life.handle_int()
    assert life.phase is Phase.STOPPING
    assert sorted(pid for pid, sig in p.system.sent if sig == signal.SIGKILL) == (
        sorted(p.pool.children)
    )
    assert actions(caplog_info)[-2:] == ["drain", "stop_now"]


# --- Police -------------------------------------------------------------------


def police_of(p: Parts) -> Police:
    return Police(p.config, p.board, p.pool.kill)


def test_police_stops_the_child_of_a_job_past_its_time_limit(parts, caplog_info):
    p = parts(concurrency=1, job_timeout=10)
    p.pool.start()
    p.spawn_due()
    (child,) = p.pool.children.values()
    SlotWriter(p.board, child.slot).job_started(42, "slow", 1)
    police = police_of(p)
    police.patrol(p.pool.children.values(), p.system.clock + 5)
    assert p.system.sent == [] and child.timed_out_jobs == set()
    over = p.system.clock + 11
    police.patrol(p.pool.children.values(), over)
    assert p.system.sent == [(child.pid, signal.SIGTERM)]
    assert child.timed_out_jobs == {42}
    assert child.kill.at == over + TIME_LIMIT_GRACE
    police.patrol(p.pool.children.values(), over + TIME_LIMIT_GRACE)
    assert p.system.sent[-1] == (child.pid, signal.SIGKILL)
    assert actions(caplog_info)[-2:] == ["time_limit", "child_killed"]


def test_police_kills_a_wedged_child_once(parts, caplog_info):
    p = parts(concurrency=1, child_timeout=30)
    p.pool.start()
    p.spawn_due()
    (child,) = p.pool.children.values()
    police = police_of(p)
    police.patrol(p.pool.children.values(), p.system.clock + 31)
    police.patrol(p.pool.children.values(), p.system.clock + 32)
    assert p.system.sent == [(child.pid, signal.SIGKILL)]
    assert child.kill.wedged and "child_wedged" in actions(caplog_info)


# --- Reaper -------------------------------------------------------------------


class AnsweringDB(DownDB):
    """A session that answers every call with ``answer``."""

    is_up = True

    def __init__(self, answer: Any = None) -> None:
        super().__init__()
        self.answer = answer
        self.calls = 0

    def run(self, work: Any) -> Any:
        self.calls += 1
        return self.answer


def recovery_of(p: Parts, db: Any, wakes: list[int] | None = None) -> Recovery:
    wakes = [] if wakes is None else wakes
    return Recovery(
        p.config,
        db,
        p.system,
        FakeApp(),  # type: ignore[arg-type]
        metrics.Totals(),
        Outbox(),
        lambda: wakes.append(1),
    )


def test_reaper_queues_a_dead_childs_jobs_and_refills_its_slot(parts, caplog_info):
    p = parts(concurrency=1)
    p.pool.start()
    p.spawn_due()
    (child,) = p.pool.children.values()
    SlotWriter(p.board, child.slot).set_worker_id(77)
    recovery = recovery_of(p, DownDB())
    totals = metrics.Totals()
    reaper = Reaper(p.system, p.board, recovery, totals, recovery.outbox, None)
    p.system.die(child.pid, killed(signal.SIGKILL))
    p.system.die(99, exited(0))  # a process of the supervisor no pool owns
    strays = reaper.reap([p.pool], running=True)
    assert strays == [(99, exited(0))]
    assert [r.worker_id for r in recovery.unrecovered] == [77]  # database down
    assert recovery.unrecovered[0].count_crash
    assert p.pool.children == {} and 0 in p.pool.respawn_at
    assert totals.exits and "child_exited" in actions(caplog_info)


def test_reaper_recovers_by_the_worker_id_last_seen_if_the_slot_lost_it(parts):
    """The slot of a dead child shows no worker id (found blank): its jobs are
    still recovered, by the worker id the police last saw there."""
    p = parts(concurrency=1)
    p.pool.start()
    p.spawn_due()
    (child,) = p.pool.children.values()
    SlotWriter(p.board, child.slot).set_worker_id(77)
    police_of(p).patrol(p.pool.children.values(), p.system.clock)
    p.board.clear(child.slot)
    recovery = recovery_of(p, DownDB())
    reaper = Reaper(p.system, p.board, recovery, metrics.Totals(), Outbox(), None)
    p.system.die(child.pid, killed(signal.SIGKILL))
    reaper.reap([p.pool], running=True)
    assert [r.worker_id for r in recovery.unrecovered] == [77]


# --- Recovery -----------------------------------------------------------------


def pending(worker_id: int) -> PendingRecovery:
    return PendingRecovery(worker_id, "died", 1, set(), count_crash=True)


def test_recovery_waits_for_the_database_and_keeps_the_order(parts):
    p = parts()
    db = DownDB()
    recovery = recovery_of(p, db)
    recovery.add(pending(1))
    recovery.add(pending(2))
    assert [r.worker_id for r in recovery.unrecovered] == [1, 2]
    assert [r.failures for r in recovery.unrecovered] == [0, 0]  # an outage


def test_recovery_that_errs_backs_off_without_holding_back_the_others(parts):
    p = parts()
    db = AnsweringDB(None)  # up, but the call fails
    recovery = recovery_of(p, db)
    recovery.unrecovered = [pending(1), pending(2)]
    recovery.run()
    assert [r.failures for r in recovery.unrecovered] == [1, 1]  # both tried
    calls = db.calls
    recovery.run()  # within the backoff: not tried again
    assert db.calls == calls
    p.system.sleep(recovering.retry_delay(1))
    recovery.run()
    assert [r.failures for r in recovery.unrecovered] == [2, 2]


def test_recovered_jobs_are_counted_told_and_wake_the_children(parts):
    p = parts()
    done = fleet_recovery.Recovery(
        job_id=5,
        task_name="t",
        queue="q",
        worker_id=1,
        cause="died",
        action=fleet_recovery.Action.RETRIED,
        crashes=1,
        reason="put back",
    )
    wakes: list[int] = []
    recovery = recovery_of(p, AnsweringDB([done]), wakes)
    recovery.add(pending(1))
    assert recovery.unrecovered == [] and wakes == [1]
    assert [e.job_id for e in recovery.outbox.pending] == [5]
    assert recovery.totals.per_minute is not None


# --- Maintenance --------------------------------------------------------------


def snapshot_of(*worker_ids: int) -> FleetSnapshot:
    return FleetSnapshot(
        host="h",
        pid=1,
        phase="running",
        concurrency=len(worker_ids),
        crash_looping=False,
        database_up=False,
        child_timeout=60.0,
        children=tuple(
            ChildSnapshot(
                slot=i, pid=100 + i, state="idle", heartbeat_age=0.0, worker_id=w
            )
            for i, w in enumerate(worker_ids)
        ),
        queues=None,
        uptime=0.0,
    )


def test_maintenance_beats_on_its_clock_and_at_once_for_a_new_worker(parts):
    p = parts(heartbeat_interval=10)
    db = DownDB()
    maintenance = Maintenance(
        p.config, db, p.system, metrics.Totals(), Outbox(), lambda d: None, lambda: None
    )
    maintenance.supervisor_row = 1
    now = p.system.clock
    maintenance.tick(snapshot_of(), now)
    assert maintenance.next_heartbeat == now + 10
    assert not maintenance.heartbeats.healthy_for(now)  # the beat failed
    maintenance.tick(snapshot_of(), now + 1)
    assert maintenance.next_heartbeat == now + 10  # not due yet
    maintenance.tick(snapshot_of(7), now + 2)  # a new worker id: written now
    assert maintenance.next_heartbeat == now + 12
    assert maintenance.recorded_worker_ids == {7}


def test_maintenance_keeps_events_while_the_database_is_down(parts):
    p = parts()
    outbox = Outbox()
    maintenance = Maintenance(
        p.config, DownDB(), p.system, metrics.Totals(), outbox, print, print
    )
    outbox.pending = ["an event"]  # type: ignore[list-item]
    maintenance.write_events()
    assert outbox.pending == ["an event"]


# --- Autoscaler ---------------------------------------------------------------


def test_autoscaler_grows_with_the_backlog_and_looks_once_a_second(parts):
    p = parts(autoscale="1,4")
    p.pool.start()
    p.spawn_due()
    p.ready(State.BUSY)
    db = AnsweringDB(2)  # two runnable jobs wait
    scaler = Autoscaler(p.config, db, p.board, p.system.clock)
    scaler.look(p.pool, p.system.clock)
    assert p.pool.target == 3
    scaler.look(p.pool, p.system.clock + 0.5)
    assert db.calls == 1 and p.pool.target == 3


def test_autoscaler_shrinks_one_idle_child_per_cooldown(parts):
    p = parts(autoscale="1,4", autoscale_cooldown=30)
    p.pool.start()
    p.pool.target = 3
    p.pool.start()
    p.spawn_due()
    p.ready(State.IDLE)
    db = AnsweringDB(0)
    start = p.system.clock
    scaler = Autoscaler(p.config, db, p.board, start)
    scaler.look(p.pool, start + 10)
    assert p.pool.target == 3  # quiet, but not for a cool-down yet
    scaler.look(p.pool, start + 31)
    scaler.look(p.pool, start + 33)
    assert p.pool.target == 2
