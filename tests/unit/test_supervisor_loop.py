"""The supervisor's loop driven in-process, as gunicorn tests its arbiter:
``fork``, ``waitpid``, ``kill`` and the clock are a fake ``System``, the
database is always down. Each test runs in milliseconds and asserts on the
outcome (children, slots, signals sent) and on the ``action`` of log records.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import pytest

from procrastinate_prefork.child.scoreboard import SlotWriter, State
from procrastinate_prefork.config import build_config
from procrastinate_prefork.supervisor import policy, pool, signals
from procrastinate_prefork.supervisor.arbiter import Supervisor
from procrastinate_prefork.supervisor.children import Phase
from procrastinate_prefork.supervisor.lifecycle import Lifecycle

from .supervisor_fakes import DownDB, FakeApp, FakeSystem, exited


class FakeBootstrap:
    app = FakeApp()
    description = "test"
    transaction_pooled = False

    def connection_args(self) -> dict[str, Any]:
        return {"conninfo": ""}

    def before_fork(self) -> None:
        pass

    def check_fork_safety(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_title(monkeypatch):
    # The test process keeps its own title.
    monkeypatch.setattr("setproctitle.setproctitle", lambda title: None)


def make(**options: Any) -> tuple[Supervisor, FakeSystem]:
    options.setdefault("concurrency", 2)
    options.setdefault("hostname", "test-host")
    system = FakeSystem()
    config = build_config(options, {})
    # duck-typed stand-ins for a Bootstrap and a SupervisorDB
    sup = Supervisor(
        config,
        FakeBootstrap(),  # type: ignore[arg-type]
        system=system,
        session=DownDB(),  # type: ignore[arg-type]
    )
    sup.maintenance.supervisor_row = 1
    sup.pool.start()
    return sup, system


def turn(sup: Supervisor) -> None:
    """One turn of ``Supervisor.run``'s loop, without its sleep."""
    sup._turn()


def actions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "action", None) for r in caplog.records if hasattr(r, "action")]


def mark_ready(sup: Supervisor) -> None:
    for child in sup.pool.children.values():
        writer = SlotWriter(sup.scoreboard, child.slot)
        writer.set_worker_id(child.pid)
        writer.set_state(State.IDLE)


def close_all(sup: Supervisor) -> None:
    for child in sup.pool.children.values():
        os.close(child.wake_fd)


@pytest.fixture
def caplog_info(caplog):
    caplog.set_level(logging.INFO, logger="procrastinate_prefork")
    return caplog


def test_spawns_every_slot_at_start(caplog_info):
    sup, system = make(concurrency=3)
    turn(sup)
    assert sorted(c.slot for c in sup.pool.children.values()) == [0, 1, 2]
    assert set(sup.pool.children) == system.alive
    assert actions(caplog_info).count("child_started") == 3
    close_all(sup)


def test_a_dead_child_is_reaped_and_its_slot_reforked(caplog_info):
    sup, system = make(concurrency=2)
    turn(sup)
    victim = next(c for c in sup.pool.children.values() if c.slot == 1)
    system.sleep(policy.MIN_UPTIME + 1)  # lived: no backoff
    system.die(victim.pid, exited(0))
    turn(sup)
    assert victim.pid not in sup.pool.children
    assert sorted(c.slot for c in sup.pool.children.values()) == [0, 1]
    assert "child_exited" in actions(caplog_info)
    assert "respawn_backoff" not in actions(caplog_info)
    close_all(sup)


def test_early_deaths_back_off_then_report_a_crash_loop(caplog_info):
    sup, system = make(concurrency=1)
    turn(sup)
    delays = []
    for _ in range(policy.CRASH_LOOP_THRESHOLD):
        (child,) = sup.pool.children.values()
        system.die(child.pid, exited(1))
        turn(sup)
        assert not sup.pool.children  # not re-forked at once
        delays.append(sup.pool.respawn_at[0] - system.clock)
        system.sleep(delays[-1])
        turn(sup)
        assert len(sup.pool.children) == 1
    assert delays == sorted(delays) and delays[-1] > delays[0] > 0
    assert sup.pool.crash_looping
    assert actions(caplog_info).count("crash_loop") == 1
    assert actions(caplog_info).count("respawn_backoff") == policy.CRASH_LOOP_THRESHOLD
    # a child that lives ends the crash loop
    system.sleep(policy.MIN_UPTIME + 1)
    (child,) = sup.pool.children.values()
    system.die(child.pid, exited(0))
    turn(sup)
    assert not sup.pool.crash_looping
    assert "crash_loop_over" in actions(caplog_info)
    close_all(sup)


def test_drain_sigkills_children_still_running_at_the_deadline(caplog_info):
    sup, system = make(concurrency=2, shutdown_graceful_timeout=5)
    turn(sup)
    stubborn, polite = sorted(sup.pool.children)
    sup.signals.queue(signal.SIGTERM, None)
    turn(sup)
    assert sup.lifecycle.phase is Phase.DRAINING
    assert {(stubborn, signal.SIGTERM), (polite, signal.SIGTERM)} <= set(system.sent)
    system.die(polite, exited(0))
    turn(sup)
    assert list(sup.pool.children) == [stubborn]
    assert (stubborn, signal.SIGKILL) not in system.sent
    system.sleep(5 + pool.KILL_MARGIN + 0.1)
    turn(sup)  # the deadline passes: SIGKILL
    turn(sup)  # and it is reaped
    assert (stubborn, signal.SIGKILL) in system.sent
    assert not sup.pool.children and not sup.pool.respawn_at and sup._finished()
    killed_records = [
        r
        for r in caplog_info.records
        if getattr(r, "action", None) == "child_exited" and r.pid == stubborn
    ]
    assert killed_records[0].cause == "shutdown deadline passed"
    assert "child_killed" in actions(caplog_info)


def test_second_stop_signal_during_a_drain_kills_at_once(caplog_info):
    sup, _ = make(concurrency=2)
    turn(sup)
    sup.signals.queue(signal.SIGTERM, None)
    sup.signals.queue(signal.SIGINT, None)
    turn(sup)
    turn(sup)
    assert sup.lifecycle.phase is Phase.STOPPING
    assert not sup.pool.children
    assert {"drain", "stop_now"} <= set(actions(caplog_info))


def test_sigttou_retires_one_child_which_is_not_replaced(caplog_info):
    sup, system = make(concurrency=3, shutdown_graceful_timeout=5)
    turn(sup)
    mark_ready(sup)
    sup.signals.queue(signal.SIGTTOU, None)
    turn(sup)
    assert sup.pool.target == 2
    retiring = [c for c in sup.pool.children.values() if c.retiring]
    assert len(retiring) == 1 and retiring[0].slot == 2  # the highest slot
    assert (retiring[0].pid, signal.SIGTERM) in system.sent
    system.die(retiring[0].pid, exited(0))
    turn(sup)
    turn(sup)
    assert sorted(c.slot for c in sup.pool.children.values()) == [0, 1]
    assert not sup.pool.respawn_at
    assert "scale_down" in actions(caplog_info)
    close_all(sup)


def test_a_retiring_child_is_sigkilled_at_its_deadline(caplog_info):
    sup, system = make(concurrency=2, shutdown_graceful_timeout=5)
    turn(sup)
    mark_ready(sup)
    sup.signals.queue(signal.SIGTTOU, None)
    turn(sup)
    (retiring,) = [c for c in sup.pool.children.values() if c.retiring]
    system.sleep(5 + pool.KILL_MARGIN + 0.1)
    turn(sup)
    turn(sup)
    assert (retiring.pid, signal.SIGKILL) in system.sent
    assert retiring.pid not in sup.pool.children
    assert retiring.kill.deadline_kill  # its jobs are not counted as a crash
    assert len(sup.pool.children) == 1
    close_all(sup)


def test_sighup_forks_a_new_generation_before_retiring_the_old(caplog_info):
    sup, system = make(concurrency=2)
    turn(sup)
    old = set(sup.pool.children)
    mark_ready(sup)
    sup.signals.queue(signal.SIGHUP, None)
    turn(sup)
    assert "rolling_restart" in actions(caplog_info)
    new = set(sup.pool.children) - old
    assert len(new) == 2  # new ones first...
    assert not any((pid, signal.SIGTERM) in system.sent for pid in old)
    mark_ready(sup)
    turn(sup)  # ...and the old ones retire once the new ones are ready
    assert {(pid, signal.SIGTERM) for pid in old} <= set(system.sent)
    for pid in old:
        system.die(pid, exited(0))
    turn(sup)
    assert set(sup.pool.children) == new
    assert not sup.pool.respawn_at
    close_all(sup)


def test_sigttin_grows_the_fleet(caplog_info):
    sup, _ = make(concurrency=1)
    turn(sup)
    sup.signals.queue(signal.SIGTTIN, None)
    turn(sup)
    assert sup.pool.target == 2
    assert sorted(c.slot for c in sup.pool.children.values()) == [0, 1]
    assert "scale_up" in actions(caplog_info)
    close_all(sup)


def test_a_failed_fork_is_retried_a_second_later(caplog_info):
    sup, system = make(concurrency=1)
    turn(sup)
    (child,) = sup.pool.children.values()
    system.sleep(policy.MIN_UPTIME + 1)
    system.fail_forks = 1
    system.die(child.pid, exited(0))
    turn(sup)
    assert not sup.pool.children and sup.pool.respawn_at[0] > system.clock
    assert "fork_failed" in actions(caplog_info)
    system.sleep(1.0)
    turn(sup)
    assert len(sup.pool.children) == 1
    close_all(sup)


def test_one_shot_children_that_found_the_queues_empty_are_not_replaced(
    caplog_info,
):
    sup, system = make(concurrency=2, wait=False)
    turn(sup)
    for pid in list(sup.pool.children):
        system.die(pid, exited(policy.EXIT_QUEUES_EMPTY))
    turn(sup)
    assert not sup.pool.children and not sup.pool.respawn_at and sup._finished()


def test_one_shot_child_stopped_for_another_reason_is_replaced(caplog_info):
    """Exit 0 in one-shot mode (a time limit's SIGTERM, one sent by hand) says
    nothing of the queues: the slot gets a new child, the run goes on."""
    sup, system = make(concurrency=2, wait=False)
    turn(sup)
    first, second = sorted(sup.pool.children)
    system.die(first, exited(0))
    system.die(second, exited(policy.EXIT_QUEUES_EMPTY))
    turn(sup)
    turn(sup)
    assert len(sup.pool.children) == 1 and first not in sup.pool.children
    assert not sup._finished()
    (replacement,) = sup.pool.children
    system.die(replacement, exited(policy.EXIT_QUEUES_EMPTY))
    turn(sup)
    assert not sup.pool.children and sup._finished()


def test_one_shot_child_of_an_older_generation_stopped_early_is_replaced(
    caplog_info,
):
    """After a SIGHUP, a one-shot fleet forks no new generation: its children
    go on. One of them stopped for another reason than empty queues must
    still get a replacement, or its slot's jobs wait for nobody."""
    sup, system = make(concurrency=1, wait=False)
    turn(sup)
    mark_ready(sup)
    sup.signals.queue(signal.SIGHUP, None)
    turn(sup)
    (old,) = sup.pool.children
    system.die(old, exited(0))
    turn(sup)
    turn(sup)
    assert len(sup.pool.children) == 1 and old not in sup.pool.children
    assert not sup._finished()
    close_all(sup)


def test_a_wedged_child_is_sigkilled(caplog_info):
    sup, system = make(concurrency=1, child_timeout=30)
    turn(sup)
    (child,) = sup.pool.children.values()
    system.sleep(31)  # its scoreboard heartbeat stays at the fork
    turn(sup)
    turn(sup)
    assert (child.pid, signal.SIGKILL) in system.sent
    assert "child_wedged" in actions(caplog_info)
    assert child.kill.reason is not None and not child.kill.deadline_kill
    assert child.kill.wedged
    turn(sup)  # reaped: its exit is counted as wedged, not by its log text
    assert sup.totals.exits == {"wedged": 1}
    close_all(sup)


def test_every_handled_signal_has_a_handler():
    for signum in signals.HANDLED:
        assert callable(getattr(Lifecycle, signals.handler_name(signum)))


def test_a_failing_recovery_backs_off_exponentially_up_to_a_cap():
    from procrastinate_prefork.supervisor import recovering

    delays = [recovering.retry_delay(n) for n in range(1, 10)]
    assert delays[:3] == [1.0, 2.0, 4.0]
    assert delays[-1] == recovering.RECOVERY_RETRY_MAX


def test_a_scheduled_kill_blames_the_deadline_only_without_a_reason():
    from procrastinate_prefork.supervisor.children import PendingKill

    deadline = PendingKill().schedule(10.0, "deadline").fire()
    assert (deadline.reason, deadline.at, deadline.deadline_kill) == (
        "deadline",
        None,
        True,
    )
    blamed = PendingKill().blame("time limit").schedule(10.0, "").fire()
    assert (blamed.reason, blamed.deadline_kill) == ("time limit", False)
    assert not PendingKill().due(1e9) and PendingKill(at=5.0).due(5.0)


def test_the_snapshot_is_what_the_supervisor_knows():
    sup, system = make(concurrency=2, child_timeout=30)
    turn(sup)
    mark_ready(sup)
    system.sleep(10)
    snap = sup.snapshot()
    assert (snap.concurrency, snap.phase, snap.database_up) == (2, "running", False)
    assert sorted(c.slot for c in snap.children) == [0, 1]
    assert {c.state for c in snap.children} == {"idle"}
    assert [c.uptime for c in snap.children] == [pytest.approx(10)] * 2
    assert sorted(snap.fresh_worker_ids()) == sorted(sup.pool.children)
    system.sleep(30)  # no beat from either: both wedged, none fresh
    assert sup.snapshot().fresh_worker_ids() == []
    close_all(sup)
