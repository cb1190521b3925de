"""The chaos run's pools hosts (tests/chaos_pools.py): their command lines
and pools go through the configuration layer as a real start's do, and the
books count and judge the runs of each pool (synthetic events, no database)."""

from __future__ import annotations

from procrastinate_prefork import cli
from procrastinate_prefork.config import arguments, build_config

from ..chaos_driver import ChaosConfig
from ..chaos_pools import (
    ASYNC_QUEUE,
    PoolPlan,
    child_pools,
    misrouted,
    runs_by_pool,
    size_after_ttou,
)


def _configured(config: ChaosConfig, index: int):
    """The PreforkConfig host ``index`` starts with (tests/pools_main.py
    passes the pools as the setting, the rest is its command line)."""
    argv = ["--app", "x", "worker", *config.fleet_args(f"h{index}", index)]
    namespace, extras = cli.build_parser().parse_known_args(argv)
    assert not extras
    settings = (
        {"pools": config.pools_setting(index)} if config.host(index).pools else {}
    )
    return build_config(
        arguments.cli_values_from_namespace(namespace), environ={}, settings=settings
    )


def test_the_sighup_and_timed_hosts_run_two_pools_every_queue_served():
    config = ChaosConfig()
    hosts = [_configured(config, i) for i in range(3)]
    assert hosts[0].pools == ()
    assert hosts[0].queues == ("default", ASYNC_QUEUE)
    for host in hosts[1:]:
        pools = {p.name: p.config for p in host.pools}
        assert set(pools) == {"main", "io"}
        # as many children as a one-pool host: the SIGHUP and final counts
        assert sum(p.concurrency for p in pools.values()) == config.children
        assert pools["main"].queues == ("default",)
        assert pools["main"].child_concurrency == 1
        assert pools["io"].child_concurrency == 2
        assert all(p.child_timeout == config.child_timeout for p in pools.values())
    timed = {p.name: p.config for p in hosts[2].pools}
    assert timed["io"].queues == (ASYNC_QUEUE, "timed")
    assert timed["io"].task_timeouts == {"chaos_overrun": config.time_limit}
    assert timed["main"].task_timeouts == {}
    # SIGTTOU then SIGTTIN on the log-pipe host: back to its size
    sizes = config.pool_sizes(1)
    assert size_after_ttou(sizes) + len(sizes) == config.children


def test_without_pools_or_with_too_few_children_every_host_runs_one_pool():
    for config in (ChaosConfig(pools=False), ChaosConfig(children=3)):
        for index in range(3):
            assert config.pools_setting(index) == {}
            assert _configured(config, index).pools == ()
    assert size_after_ttou(ChaosConfig(pools=False).pool_sizes(1)) == 3


def test_runs_are_counted_by_pool_and_a_misrouted_run_is_caught():
    host_of = {10: "h1", 20: "h0"}
    events = [
        {"action": "child_started", "process": 10, "pid": 11, "pool": "main"},
        {"action": "child_started", "process": 10, "pid": 12, "pool": "io"},
        {"action": "child_started", "process": 20, "pid": 21, "pool": "default"},
        {"action": "child_exited", "process": 10, "pid": 11},
    ]
    assert runs_by_pool(events, [11, 11, 12, 21, 99], host_of) == {
        "h0": {"default": 1},
        "h1": {"io": 1, "main": 2},
    }
    pools = {
        "h1": (PoolPlan("main", ("default",), 2, 1), PoolPlan("io", ("io",), 2, 2))
    }
    pool_of = child_pools(events, host_of)
    fine = [(1, 11, "default"), (2, 12, "io"), (3, 21, "io")]
    assert misrouted(fine, pool_of, pools) == []
    [problem] = misrouted([*fine, (4, 12, "default")], pool_of, pools)
    assert "job 4" in problem and "pool io" in problem
