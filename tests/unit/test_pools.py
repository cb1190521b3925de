"""Several pools under one supervisor (issue 24): the pure rules (slot
ranges, channels, routing) and the loop driven in-process with two pools, as
in test_supervisor_loop (fake ``System``, database always down)."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from typing import Any

import pytest

from procrastinate_prefork import launcher
from procrastinate_prefork.child import wakepipe
from procrastinate_prefork.config import PreforkConfig, build_config
from procrastinate_prefork.config.pools import PoolSpec
from procrastinate_prefork.fleet.snapshot import union_queues
from procrastinate_prefork.supervisor import db, policy, slots
from procrastinate_prefork.supervisor.arbiter import Supervisor
from procrastinate_prefork.supervisor.pool import SLOTS_PER_POOL

from .supervisor_fakes import DownDB, FakeSystem, exited
from .test_supervisor_loop import FakeBootstrap, actions

INSERTED = '{"type": "job_inserted", "job_id": 1}'
ABORT = '{"type": "abort_job_requested", "job_id": 2}'
CPU, IO = ("cpu",), ("io", "mail")


# ------------------------------------------------------------ pure rules


def test_each_pool_has_its_own_slots_the_first_from_zero():
    first, second = slots.pool_ranges(2, 10)
    assert (first, second) == (range(0, 10), range(10, 20))
    assert slots.free_slot({10, 11}, start=10, limit=20) == 12


def test_the_session_listens_to_every_pool_s_channels_once():
    assert db.pool_channels([CPU, ("cpu", "io")]) == [
        "procrastinate_queue_v1#cpu",
        "procrastinate_queue_v1#io",
    ]
    # a pool of every queue adds the channel of all; the others keep theirs
    assert db.pool_channels([CPU, None]) == [
        "procrastinate_queue_v1#cpu",
        "procrastinate_any_queue_v1",
    ]
    # one pool: what a fleet without pools listens to
    assert db.pool_channels([CPU]) == db.listen_channels(CPU)
    assert db.pool_channels([None]) == db.listen_channels(None)


def test_a_notification_goes_to_the_pools_serving_its_queue():
    heard = [
        ("procrastinate_queue_v1#io", INSERTED),
        ("procrastinate_queue_v1#mail", ABORT),
        ("procrastinate_queue_v1#cpu", INSERTED),
        ("procrastinate_any_queue_v1", INSERTED),
    ]
    cpu, io, every = wakepipe.route(heard, [CPU, IO, None])
    assert cpu == [("procrastinate_queue_v1#cpu", INSERTED)]
    assert io == [
        ("procrastinate_queue_v1#io", INSERTED),
        ("procrastinate_queue_v1#mail", ABORT),
    ]
    # a pool of every queue hears the channel of all (procrastinate notifies
    # every job there too), and only that one: no job twice
    assert every == [("procrastinate_any_queue_v1", INSERTED)]
    # one pool: everything, as without pools
    assert wakepipe.route(heard, [CPU]) == [heard]


def test_the_queues_of_all_pools():
    assert union_queues([CPU, IO, ("cpu",)]) == ("cpu", "io", "mail")
    assert union_queues([CPU, None]) is None


# ------------------------------------------------------------ the loop


@pytest.fixture(autouse=True)
def _no_title(monkeypatch):
    monkeypatch.setattr("setproctitle.setproctitle", lambda title: None)


@pytest.fixture
def caplog_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="procrastinate_prefork")
    return caplog


def pools_config(**options: Any) -> PreforkConfig:
    options.setdefault("hostname", "test-host")
    config = build_config(options, {})
    return dataclasses.replace(
        config,
        pools=(
            PoolSpec("cpu", dataclasses.replace(config, queues=CPU, concurrency=2)),
            PoolSpec(
                "io",
                dataclasses.replace(
                    config, queues=IO, concurrency=1, child_concurrency=10
                ),
            ),
        ),
    )


def make_pools(**options: Any) -> tuple[Supervisor, FakeSystem]:
    config = pools_config(**options)
    system = FakeSystem()
    sup = Supervisor(
        config,
        FakeBootstrap(),  # type: ignore[arg-type]
        system=system,
        session=DownDB(),  # type: ignore[arg-type]
    )
    sup.maintenance.supervisor_row = 1
    for pool in sup.pools:
        pool.start()
    return sup, system


def by_pool(sup: Supervisor) -> dict[str, list[int]]:
    return {p.name: sorted(c.slot for c in p.children.values()) for p in sup.pools}


def close_all(sup: Supervisor) -> None:
    for pool in sup.pools:
        for child in pool.children.values():
            os.close(child.wake_fd)


def test_each_pool_forks_its_children_in_its_slots_with_its_config():
    sup, _ = make_pools()
    sup._turn()
    assert by_pool(sup) == {"cpu": [0, 1], "io": [SLOTS_PER_POOL]}
    cpu, io = sup.pools
    assert (cpu.fork.config.queues, cpu.fork.pool) == (CPU, "cpu")
    assert (io.fork.config.child_concurrency, io.fork.pool) == (10, "io")
    # the scoreboard holds both ranges, each slot room for io's 10 jobs
    assert sup.scoreboard.size == 2 * SLOTS_PER_POOL
    assert sup.scoreboard.jobs_per_slot == 10
    snapshot = sup.snapshot()
    assert snapshot.concurrency == 3 and snapshot.queues == ("cpu", "io", "mail")
    assert [(p.name, p.concurrency) for p in snapshot.pools] == [("cpu", 2), ("io", 1)]
    assert sorted(c.pool for c in snapshot.children) == ["cpu", "cpu", "io"]
    close_all(sup)


def test_a_pool_in_a_crash_loop_does_not_hold_back_the_other(caplog_debug):
    sup, system = make_pools()
    sup._turn()
    cpu, io = sup.pools
    for _ in range(policy.CRASH_LOOP_THRESHOLD):
        (child,) = io.children.values()
        system.die(child.pid, exited(1))
        sup._turn()
        system.sleep(io.respawn_at[SLOTS_PER_POOL] - system.clock)
        sup._turn()
    assert io.crash_looping and not cpu.crash_looping
    assert sup.snapshot().crash_looping
    [record] = [
        r for r in caplog_debug.records if getattr(r, "action", "") == "crash_loop"
    ]
    assert record.pool == "io"
    # the io slot backs off; a cpu child that dies meanwhile is re-forked at once
    (child,) = io.children.values()
    system.die(child.pid, exited(1))
    sup._turn()
    assert io.respawn_at[SLOTS_PER_POOL] - system.clock > policy.MIN_UPTIME + 1
    victim = next(iter(cpu.children.values()))
    system.sleep(policy.MIN_UPTIME + 1)
    system.die(victim.pid, exited(1))
    sup._turn()
    assert by_pool(sup) == {"cpu": [0, 1], "io": []}
    assert io.respawn_at
    close_all(sup)


def test_wake_ups_reach_only_the_pools_serving_the_queue(caplog_debug):
    sup, _ = make_pools()
    sup._turn()
    sup._wake_pending = False
    caplog_debug.clear()
    sup.db.notifications = lambda: [("procrastinate_queue_v1#mail", INSERTED)]  # type: ignore[method-assign]
    sup._forward_wakeups()
    woken = [
        r for r in caplog_debug.records if getattr(r, "action", "") == "wake_forwarded"
    ]
    assert [r.pool for r in woken] == ["io"]
    # after a recovery (or a reconnection): every pool
    sup.db.notifications = lambda: []  # type: ignore[method-assign]
    sup._request_wake()
    caplog_debug.clear()
    sup._forward_wakeups()
    assert actions(caplog_debug) == ["wake_forwarded", "wake_forwarded"]
    close_all(sup)


def test_signals_act_on_every_pool_within_its_bounds(caplog_debug):
    sup, _ = make_pools()
    sup._turn()
    sup.signals.queue(signal.SIGTTIN, None)
    sup._turn()
    assert [p.target for p in sup.pools] == [3, 2]
    sup.signals.queue(signal.SIGTTOU, None)
    sup.signals.queue(signal.SIGTTOU, None)
    sup._turn()
    assert [p.target for p in sup.pools] == [1, 1]  # never below one child
    generations = [p.generation for p in sup.pools]
    sup.signals.queue(signal.SIGHUP, None)
    sup._turn()
    assert [p.generation for p in sup.pools] == [g + 1 for g in generations]
    close_all(sup)


def test_the_banner_lists_the_pools():
    text = launcher.banner(pools_config(), FakeBootstrap())  # type: ignore[arg-type]
    assert "pool cpu: 2 x 1 job(s) at once; queues: cpu" in text
    assert "pool io: 1 x 10 job(s) at once; queues: io, mail" in text
