"""The configuration of several pools (issue 24): the ``pools`` setting,
``--pool`` in both front ends, ``run_worker(pools=...)`` and the environment,
resolved into ``PoolSpec``s; and every refusal, one line naming its source."""

from __future__ import annotations

import argparse

import pytest

from procrastinate_prefork import cli, config
from procrastinate_prefork.config import arguments, build_config
from procrastinate_prefork.config import table as options
from procrastinate_prefork.config.parsing import ConfigError
from procrastinate_prefork.config.pool_options import PoolConflict, PoolError
from procrastinate_prefork.config.pools import DEFAULT_POOL, POOL_OPTIONS, pools_of

SETTING = {
    "cpu": {"queues": ["reports"], "concurrency": 4},
    "io": {"queues": ["emails", "webhooks"], "concurrency": 1, "child_concurrency": 50},
}
FLAGS = ["--pool", "cpu=reports:4", "--pool", "io=emails,webhooks:1:50"]


def parse(argv, environ=None, settings=None):
    parser = argparse.ArgumentParser()
    arguments.add_arguments(parser)
    namespace = parser.parse_args(argv)
    return build_config(
        arguments.cli_values_from_namespace(namespace), environ or {}, settings
    )


def shape(cfg):
    """What routes jobs: each pool's name, queues and sizes."""
    return [
        (
            spec.name,
            spec.config.queues,
            spec.config.concurrency,
            spec.config.child_concurrency,
            spec.config.autoscale,
        )
        for spec in pools_of(cfg)
    ]


EXPECTED = [
    ("cpu", ("reports",), 4, 1, None),
    ("io", ("emails", "webhooks"), 1, 50, None),
]


def test_the_setting_the_flag_the_environment_and_the_api_give_the_same_pools():
    from_setting = parse([], settings={"pools": SETTING})
    from_flags = parse(FLAGS)
    from_env = parse(
        [], {"PROCRASTINATE_PREFORK_POOLS": "cpu=reports:4; io=emails,webhooks:1:50"}
    )
    from_api = build_config({"pools": SETTING}, environ={})  # run_worker's call
    for cfg in (from_setting, from_flags, from_env, from_api):
        assert shape(cfg) == EXPECTED
    assert from_setting == from_flags == from_env == from_api


def test_without_pools_one_default_pool_of_the_top_level_options():
    cfg = parse(["--concurrency", "3", "--queues", "a,b"])
    assert cfg.pools == ()
    [spec] = pools_of(cfg)
    assert spec.name == DEFAULT_POOL and spec.config is cfg
    # an empty pools setting is no pools: the same configuration
    assert parse(["-c", "3", "-q", "a,b"], settings={"pools": {}}) == cfg


def test_a_pool_inherits_the_top_level_per_child_options_it_does_not_give():
    cfg = parse(
        [],
        {"PROCRASTINATE_PREFORK_MAX_JOBS_PER_CHILD": "100"},
        {
            "job_timeout": 60,
            "health_port": 8001,
            "autoscale": (2, 6),
            "pools": {
                "cpu": {"queues": ["reports"], "job_timeout": 600},
                "io": {"queues": ["emails"], "concurrency": 1},
                "big": {"queues": ["imports"], "autoscale": [1, 3]},
            },
        },
    )
    cpu, io, big = (spec.config for spec in cfg.pools)
    assert (cpu.job_timeout, io.job_timeout) == (600, 60)
    assert cpu.max_jobs_per_child == io.max_jobs_per_child == 100  # environment
    assert cpu.autoscale == (2, 6)  # gives no size: the top-level one
    assert io.autoscale is None  # gives its concurrency: its size whole
    assert big.autoscale == (1, 3)
    for pool in (cpu, io, big):
        assert pool.health_port == 8001 and pool.pools == ()
    assert cfg.health_port == 8001


def test_host_wide_options_may_come_with_the_flag():
    cfg = parse([*FLAGS, "--health-port", "8001", "--stalled-timeout", "40"])
    assert {spec.config.health_port for spec in cfg.pools} == {8001}
    assert shape(cfg) == EXPECTED


def test_star_is_every_queue_for_a_pool_alone():
    assert shape(parse(["--pool", "all=*:3"])) == [("all", None, 3, 1, None)]
    [spec] = parse([], settings={"pools": {"all": {"queues": "*"}}}).pools
    assert spec.config.queues is None


def test_the_flag_replaces_the_settings_pools_and_top_level_queues():
    cfg = parse(FLAGS, settings={"queues": ["x"], "pools": {"x": {"queues": ["x"]}}})
    assert shape(cfg) == EXPECTED


def test_the_environments_pools_win_over_the_settings_queues():
    environ = {"PROCRASTINATE_PREFORK_POOLS": "cpu=reports:4 io=emails,webhooks:1:50"}
    assert shape(parse([], environ, {"queues": ["x"]})) == EXPECTED


def test_pool_options_are_options_of_the_table():
    assert set(options.OPTIONS_BY_NAME) >= POOL_OPTIONS


def one_line_error(cls, argv=(), environ=None, settings=None) -> str:
    with pytest.raises(cls) as info:
        parse(list(argv), environ, settings)
    message = str(info.value)
    assert "\n" not in message
    return message


def pools_setting(**pools):
    return {"pools": pools}


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        (pools_setting(cpu={"queues": ["a"], "concurency": 2}), ["cpu", "concurrency"]),
        (pools_setting(cpu={"queues": ["a"], "health_port": 8001}), ["health_port"]),
        (pools_setting(cpu={"queues": ["a"], "hostname": "h"}), ["hostname"]),
        (pools_setting(cpu={"concurrency": 2}), ["cpu"]),
        (pools_setting(cpu={"queues": []}), ["cpu"]),
        (pools_setting(cpu={"queues": None}), ["cpu"]),
        (pools_setting(cpu={"queues": ["*", "a"]}), ["cpu"]),
        (pools_setting(cpu={"queues": 3}), ["cpu"]),
        (pools_setting(cpu={"queues": ["a"], "concurrency": "4"}), ["concurrency"]),
        (pools_setting(cpu={"queues": ["a"], "concurrency": 0}), ["concurrency"]),
        (pools_setting(cpu={"queues": ["a"], "listen_notify": "no"}), ["cpu"]),
        (pools_setting(cpu=["a"]), ["cpu"]),
        ({"pools": {"CPU": {"queues": ["a"]}}}, ["CPU"]),
        ({"pools": {"a b": {"queues": ["a"]}}}, ["a b"]),
        ({"pools": {"-a": {"queues": ["a"]}}}, ["-a"]),
        ({"pools": {"p" * 33: {"queues": ["a"]}}}, ["p" * 33]),
        ({"pools": {1: {"queues": ["a"]}}}, ["1"]),
        ({"pools": 5}, []),
        (
            pools_setting(
                cpu={"queues": ["a"], "job_timeout": 10, "soft_job_timeout": 10}
            ),
            ["cpu"],
        ),
    ],
)
def test_a_bad_pool_in_the_setting_is_one_line_naming_it(settings, names):
    message = one_line_error(PoolError, settings=settings)
    assert message.startswith("setting PROCRASTINATE_PREFORK['pools']")
    for name in names:
        assert name in message


def test_a_soft_limit_inherited_above_a_pools_hard_one_is_refused():
    message = one_line_error(
        PoolError,
        settings={
            "soft_job_timeout": 20,
            "pools": {"cpu": {"queues": ["a"], "job_timeout": 10}},
        },
    )
    assert "'cpu'" in message


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["cpu"], ["cpu"]),
        (["cpu=reports"], ["cpu=reports"]),
        (["cpu=reports:1:2:3"], ["cpu=reports:1:2:3"]),
        (["cpu=:2"], ["cpu"]),
        (["cpu=reports:0"], ["concurrency"]),
        (["cpu=reports:513"], ["concurrency"]),
        (["cpu=reports:two"], ["concurrency"]),
        (["cpu=reports:1:0"], ["child_concurrency"]),
        (["cpu=reports:1:1001"], ["child_concurrency"]),
        (["Cpu=reports:1"], ["Cpu"]),
        (["=reports:1"], []),
        (["cpu=a:1", "cpu=b:1"], ["cpu"]),
    ],
)
def test_a_bad_pool_flag_is_one_line_naming_it(flags, names):
    argv = [arg for flag in flags for arg in ("--pool", flag)]
    message = one_line_error(PoolError, argv)
    assert message.startswith("--pool")
    for name in names:
        assert name in message


@pytest.mark.parametrize(
    ("argv", "settings", "names"),
    [
        # every queue beside another pool: its jobs would run in both
        (["--pool", "all=*:1", "--pool", "io=emails:1"], None, ["all"]),
        # a queue in two pools: under either pool's limits
        (["--pool", "a=x,y:1", "--pool", "b=y:1"], None, ["'y'", "'a'", "'b'"]),
        (["--pool", "a=x:300", "--pool", "b=y:300"], None, ["600"]),
        # per-child options outside a pool on the command line
        (["--pool", "a=x:1", "--concurrency", "3"], None, ["--concurrency"]),
        (["--pool", "a=x:1", "--queues", "y"], None, ["--queues"]),
        (["--pool", "a=x:1", "--job-timeout", "9"], None, ["--job-timeout"]),
        (["--concurrency", "3"], pools_setting(a={"queues": ["x"]}), ["--concurrency"]),
        # a top-level queues beside the pools of the same source
        ([], {"queues": ["x"], **pools_setting(a={"queues": ["x"]})}, ["'queues'"]),
    ],
)
def test_pools_that_do_not_go_together_are_one_line(argv, settings, names):
    message = one_line_error(PoolConflict, argv, settings=settings)
    for name in names:
        assert name in message


def test_a_top_level_queues_from_a_higher_source_than_the_pools_is_refused():
    message = one_line_error(
        PoolConflict,
        environ={"PROCRASTINATE_WORKER_QUEUES": "x"},
        settings=pools_setting(a={"queues": ["y"]}),
    )
    assert message.startswith("environment variable PROCRASTINATE_WORKER_QUEUES")


def test_bad_pools_from_the_environment_name_the_variable():
    message = one_line_error(
        PoolError, environ={"PROCRASTINATE_PREFORK_POOLS": "a=x:1;a=y:1"}
    )
    assert message.startswith("environment variable PROCRASTINATE_PREFORK_POOLS")


def test_pool_errors_are_config_errors():
    # what the front ends catch for their one line and exit code 2
    assert issubclass(PoolError, ConfigError) and issubclass(PoolConflict, ConfigError)


def test_settings_problems_report_pools_by_kind():
    problems = config.settings_problems(
        {"concurency": 2, "pools": {"a": {"queues": ["x"], "health_port": 1}}}
    )
    assert [(kind, key) for kind, key, _ in problems] == [
        ("unknown", "concurency"),
        ("pool_invalid", "pools"),
    ]
    conflict = config.settings_problems(
        {"pools": {"a": {"queues": ["x"]}, "b": {"queues": ["x"]}}}
    )
    assert [(kind, key) for kind, key, _ in conflict] == [("pools_conflict", "pools")]
    together = config.settings_problems(
        {"queues": ["x"], "pools": {"a": {"queues": ["x"]}}}
    )
    assert [(kind, key) for kind, key, _ in together] == [("pools_conflict", "pools")]
    assert config.settings_problems({"pools": SETTING, "job_timeout": 60}) == []


def test_both_front_ends_take_the_pool_flag_alike():
    pytest.importorskip("django")
    from procrastinate_prefork.contrib.django.management.commands import (
        prefork_worker,
    )

    argv = [*FLAGS, "--health-port", "8001"]
    plain = cli.build_parser().parse_args(["--app", "x.app", "worker", *argv])
    django = prefork_worker.Command().create_parser("manage.py", "prefork_worker")
    values = arguments.cli_values_from_namespace(plain)
    assert values == arguments.cli_values_from_namespace(django.parse_args(argv))
    assert values["pools"] == ["cpu=reports:4", "io=emails,webhooks:1:50"]
    assert shape(build_config(values, environ={})) == EXPECTED
