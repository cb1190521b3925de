"""The supervisor's poll (supervisor/poller.py): when it asks the database,
how often, and which children it wakes. The query itself runs against
PostgreSQL in tests/integration/test_poller.py and test_queries.py."""

from __future__ import annotations

import logging

import pytest

from procrastinate_prefork.child.scoreboard import SlotWriter, State
from procrastinate_prefork.supervisor.poller import Poller
from procrastinate_prefork.supervisor.scaling import Autoscaler

from . import test_supervisor_parts
from .supervisor_fakes import DownDB
from .test_supervisor_parts import AnsweringDB, Parts

parts = test_supervisor_parts.parts  # the fixture: a pool and its scoreboard


@pytest.fixture
def caplog_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="procrastinate_prefork")
    return caplog


def woken(caplog: pytest.LogCaptureFixture) -> list[list[int]]:
    return [r.pids for r in caplog.records if getattr(r, "action", "") == "poll_woke"]


def started(p: Parts, *states: State) -> list[int]:
    """The pool's children, in slot order, each in its state (default idle)."""
    p.pool.start()
    p.spawn_due()
    p.ready()
    children = sorted(p.pool.children.values(), key=lambda c: c.slot)
    for child, state in zip(children, states, strict=False):
        SlotWriter(p.board, child.slot).set_state(state)
    return [c.pid for c in children]


def test_an_idle_pool_of_four_is_polled_once_an_interval(parts, caplog_debug):
    p = parts(concurrency=4, fetch_job_polling_interval=5)
    started(p)
    db = AnsweringDB(0)
    poller = Poller(p.config, db, p.board)  # type: ignore[arg-type]
    clock = p.system.clock
    for tick in range(0, 41):  # the loop's turns, 10 s worth
        poller.poll(p.pool, clock + tick * 0.25)
    # one query at 0, 5 and 10 s: not one per child
    assert db.calls == 3
    assert woken(caplog_debug) == []


def test_a_poll_wakes_as_many_idle_children_as_jobs_are_runnable(parts, caplog_debug):
    p = parts(concurrency=4)
    pids = started(p, State.BUSY, State.IDLE, State.IDLE, State.IDLE)
    poller = Poller(p.config, AnsweringDB(2), p.board)  # type: ignore[arg-type]
    poller.poll(p.pool, p.system.clock)
    # the busy child fetches when its job ends; two of the idle ones wake
    assert woken(caplog_debug) == [pids[1:3]]


def test_no_poll_while_every_child_is_busy_nor_while_the_database_is_down(
    parts, caplog_debug
):
    p = parts(concurrency=2, fetch_job_polling_interval=1)
    started(p, State.BUSY, State.BUSY)
    db = AnsweringDB(5)
    poller = Poller(p.config, db, p.board)  # type: ignore[arg-type]
    poller.poll(p.pool, p.system.clock)
    assert db.calls == 0
    p.ready(State.IDLE)
    down = Poller(p.config, DownDB(), p.board)  # type: ignore[arg-type]
    down.poll(p.pool, p.system.clock)
    assert woken(caplog_debug) == []


def test_a_child_with_room_for_another_job_is_woken(parts, caplog_debug):
    p = parts(concurrency=1, child_concurrency=3)
    [pid] = started(p, State.BUSY)
    child = next(iter(p.pool.children.values()))
    SlotWriter(p.board, child.slot).job_started(1, "t", running=1)
    Poller(p.config, AnsweringDB(1), p.board).poll(p.pool, p.system.clock)  # type: ignore[arg-type]
    assert woken(caplog_debug) == [[pid]]
    SlotWriter(p.board, child.slot).job_started(2, "t", running=3)  # full
    db = AnsweringDB(1)
    Poller(p.config, db, p.board).poll(p.pool, p.system.clock)  # type: ignore[arg-type]
    assert db.calls == 0


def test_an_autoscaled_pool_shares_the_autoscalers_count(parts, caplog_debug):
    p = parts(autoscale="2,4", fetch_job_polling_interval=1)
    pids = started(p)
    db = AnsweringDB(1)
    scaler = Autoscaler(p.config, db, p.board, p.system.clock)  # type: ignore[arg-type]
    poller = Poller.of(scaler, db, p.board)  # type: ignore[arg-type]
    scaler.look(p.pool, p.system.clock)
    poller.poll(p.pool, p.system.clock)
    assert db.calls == 1  # the autoscaler's count, not a second query
    assert woken(caplog_debug) == [pids[:1]]
    # an old count is not trusted: the poller asks itself
    poller.poll(p.pool, p.system.clock + 3)
    assert db.calls == 2


def test_one_shot_children_are_not_polled_for(parts):
    p = parts(concurrency=2, wait=False)
    started(p)
    db = AnsweringDB(1)
    Poller(p.config, db, p.board).poll(p.pool, p.system.clock)  # type: ignore[arg-type]
    assert db.calls == 0


def test_the_polls_are_stamped_for_the_children_while_the_session_is_up(parts):
    """The children skip their own timer's fetches while this stamp is
    fresh: it must stop moving when the supervisor cannot poll."""
    from procrastinate_prefork.supervisor import pools

    p = parts(concurrency=2, fetch_job_polling_interval=1)
    started(p)
    poller = Poller(p.config, AnsweringDB(0), p.board)  # type: ignore[arg-type]
    now = p.system.clock
    pools.poll([p.pool], [poller], now, p.board, AnsweringDB(0))  # type: ignore[arg-type]
    assert p.board.polled() == now
    pools.poll([p.pool], [poller], now + 3, p.board, DownDB())  # type: ignore[arg-type]
    assert p.board.polled() == now
