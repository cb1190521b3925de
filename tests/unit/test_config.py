from __future__ import annotations

import argparse

import pytest

from procrastinate_prefork import config
from procrastinate_prefork.config import arguments, build_config, parsing
from procrastinate_prefork.config import table as options
from procrastinate_prefork.config.parsing import ConfigError


def parse(argv, environ=None, settings=None):
    parser = argparse.ArgumentParser()
    arguments.add_arguments(parser)
    namespace = parser.parse_args(argv)
    return build_config(
        arguments.cli_values_from_namespace(namespace), environ or {}, settings
    )


def test_defaults():
    cfg = parse([])
    assert cfg.concurrency == options.default_concurrency()
    assert cfg.child_concurrency == 1
    assert cfg.queues is None
    assert cfg.wait is True
    assert cfg.listen_notify is True
    assert cfg.task_timeouts == {}
    assert cfg.shutdown_graceful_timeout == 30


def test_given_is_what_any_source_set_even_to_the_default():
    """What setup_logging applies over Django's LOGGING: a value the user
    gave, whatever its source, not one left to its default."""
    default_format = options.OPTIONS_BY_NAME["log_format"].default
    cfg = parse(
        ["--log-format", default_format],
        {"PROCRASTINATE_LOG_LEVEL": "debug"},
        {"concurrency": 2},
    )
    assert cfg.given == {"log_format", "log_level", "concurrency"}
    assert parse([]).given == frozenset()


def test_precedence_cli_env_settings_default():
    settings = {"concurrency": 2, "queues": ["a"], "child_concurrency": 5}
    environ = {
        "PROCRASTINATE_PREFORK_CONCURRENCY": "3",
        "PROCRASTINATE_WORKER_QUEUES": "b,c",
    }
    cfg = parse(["--concurrency", "4"], environ, settings)
    assert cfg.concurrency == 4  # command line wins
    assert cfg.queues == ("b", "c")  # environment beats settings
    assert cfg.child_concurrency == 5  # settings beat the default


@pytest.mark.parametrize("value", ["0", "-3", "x", "2.5", "513", ""])
def test_bad_concurrency(value):
    with pytest.raises(ConfigError, match="--concurrency"):
        parse(["--concurrency", value])


def test_booleans_and_negative_flags():
    assert parse(["--one-shot"]).wait is False
    assert parse(["--no-listen-notify"]).listen_notify is False
    assert parse([], {"PROCRASTINATE_WORKER_WAIT": "no"}).wait is False
    with pytest.raises(ConfigError, match="PROCRASTINATE_WORKER_WAIT"):
        parse([], {"PROCRASTINATE_WORKER_WAIT": "maybe"})


def test_task_timeouts_from_cli_and_settings():
    cfg = parse(
        ["--task-timeout", "a=1", "--task-timeout", "b=2.5", "--job-timeout", "9"]
    )
    assert cfg.task_timeouts == {"a": 1.0, "b": 2.5}
    assert cfg.time_limit_for("a") == 1.0
    assert cfg.time_limit_for("other") == 9.0
    assert parse([], settings={"task_timeouts": {"x": 3}}).task_timeouts == {"x": 3.0}
    with pytest.raises(ConfigError, match="--task-timeout"):
        parse(["--task-timeout", "oops"])
    with pytest.raises(ConfigError, match="--task-timeout"):
        parse(["--task-timeout", "a=0"])


def test_unknown_and_bad_settings():
    # names the key given and the one meant
    with pytest.raises(ConfigError, match=r"concurency.*'concurrency'"):
        parse([], settings={"concurency": 2})
    with pytest.raises(ConfigError, match=r"PROCRASTINATE_PREFORK\['concurrency'\]"):
        parse([], settings={"concurrency": True})
    with pytest.raises(ConfigError, match=r"delete_jobs|--delete-jobs"):
        parse([], settings={"delete_jobs": "sometimes"})


def test_heartbeat_must_fit_in_stalled_timeout():
    with pytest.raises(ConfigError, match="--heartbeat-interval"):
        parse(["--heartbeat-interval", "20", "--stalled-timeout", "30"])


def test_nan_and_negative_seconds_rejected():
    for value in ["nan", "inf", "-1"]:
        with pytest.raises(ConfigError):
            parse(["--stalled-timeout", value])


def test_worker_options_pass_through():
    cfg = parse(
        [
            "-q",
            "a,b",
            "--child-concurrency",
            "3",
            "--delete-jobs",
            "successful",
            "--name",
            "w",
            "--fetch-job-polling-interval",
            "2",
            "--abort-job-polling-interval",
            "3",
            "--shutdown-graceful-timeout",
            "7",
        ]
    )
    options = cfg.worker_options(slot=2)
    assert options["queues"] == ["a", "b"]
    assert options["concurrency"] == 3
    assert options["delete_jobs"] == "successful"
    assert options["name"] == "w-2"
    # the child's timer at the interval, its fetches skipped while the
    # supervisor's polls are no more than two intervals (and a second) late
    assert options["fetch_job_polling_interval"] == 2
    assert cfg.polls_late_after == 5
    assert parse(["--fetch-job-polling-interval", "0.5"]).polls_late_after == 2
    assert options["listen_notify"] is True  # the wake pipe, always
    assert options["abort_job_polling_interval"] == 3
    assert options["shutdown_graceful_timeout"] == 7
    assert options["install_signal_handlers"] is False


def test_every_option_has_help_and_env():
    for option in options.OPTIONS:
        assert option.help.strip()
        assert option.env_vars[0] == "PROCRASTINATE_PREFORK_" + option.name.upper()


DURATIONS = [o for o in options.OPTIONS if o.name in parsing.DURATION_MAXIMA]


def test_every_duration_option_has_a_maximum():
    seconds = {
        "fetch_job_polling_interval",
        "abort_job_polling_interval",
        "shutdown_graceful_timeout",
        "stalled_timeout",
        "stock_worker_timeout",
        "heartbeat_interval",
        "child_timeout",
        "job_timeout",
        "task_timeouts",
        "restart_backoff_max",
        "autoscale_cooldown",
        "soft_job_timeout",
        "task_soft_timeouts",
    }
    assert {o.name for o in DURATIONS} == seconds


@pytest.mark.parametrize("option", DURATIONS, ids=lambda o: o.name)
def test_durations_above_their_maximum_are_refused(option):
    maximum = parsing.DURATION_MAXIMA[option.name]
    value = f"x={maximum * 10}" if option.name.startswith("task_") else "1e16"
    with pytest.raises(ConfigError, match=option.flags[-1]):
        build_config({option.name: value}, {})
    assert f"at most {int(maximum)} s" in option.help.lower()  # documented


def test_queue_names_longer_than_procrastinate_allows_are_refused():
    assert parse(["--queues", "q" * 128]).queues == ("q" * 128,)
    with pytest.raises(ConfigError, match="--queues"):
        parse(["--queues", "a," + "q" * 300])


def test_settings_problems_lists_every_problem_by_kind():
    problems = config.settings_problems(
        {"concurency": 2, "concurrency": "4", "health_port": 0, "wait": False}
    )
    assert [(kind, key) for kind, key, _ in problems] == [
        ("unknown", "concurency"),
        ("invalid", "concurrency"),
        ("invalid", "health_port"),
    ]
    assert "did you mean 'concurrency'?" in problems[0][2]
    assert config.settings_problems({"heartbeat_interval": 20})[0][0] == "inconsistent"
    # valid apart, inconsistent only together: not an "invalid" value
    assert (
        config.settings_problems({"heartbeat_interval": 20, "stalled_timeout": 60})
        == []
    )
    assert config.settings_problems(["concurrency"])[0][0] == "not_a_dict"


def test_settings_want_python_numbers_not_strings():
    with pytest.raises(ConfigError, match="PROCRASTINATE_PREFORK\\['concurrency'\\]"):
        parse([], settings={"concurrency": "4"})
    assert (
        parse([], environ={"PROCRASTINATE_PREFORK_CONCURRENCY": "4"}).concurrency == 4
    )
    assert parse([], settings={"queues": "a,b"}).queues == ("a", "b")


def test_suggest_flags_names_the_closest_flag():
    parser = argparse.ArgumentParser()
    arguments.add_arguments(parser)
    message = arguments.suggest_flags(
        parser, "unrecognized arguments: --concurency 2 --bogus --stalled-timout=3"
    )
    assert message.endswith(
        "(--concurency: did you mean --concurrency?; "
        "--stalled-timout: did you mean --stalled-timeout?)"
    )
    assert arguments.suggest_flags(parser, "unrecognized arguments: --zzzz") == (
        "unrecognized arguments: --zzzz"
    )
    assert arguments.suggest_flags(parser, "other error") == "other error"


def test_listen_dsn_from_every_source_and_never_shown():
    url = "postgresql://prefork:SECRET-77@db.internal:5432/app"
    assert parse([]).listen_dsn is None
    assert parse(["--listen-dsn", url]).listen_dsn == url
    environ = {"PROCRASTINATE_PREFORK_LISTEN_DSN": "host=db.internal dbname=app"}
    assert parse([], environ).listen_dsn == "host=db.internal dbname=app"
    assert parse([], settings={"listen_dsn": url}).listen_dsn == url
    assert "SECRET-77" not in repr(parse(["--listen-dsn", url]))


@pytest.mark.parametrize(
    "value",
    [
        "host=db password=SECRET-77 dangling",
        "postgresql://u:SECRET-77@db/app?nosuchparameter=1",
    ],
)
def test_bad_listen_dsn_is_refused_without_repeating_it(value):
    with pytest.raises(ConfigError, match="--listen-dsn") as caught:
        parse(["--listen-dsn", value])
    assert "SECRET-77" not in str(caught.value)


def test_soft_time_limits_from_every_source():
    cfg = parse(
        [
            "--soft-job-timeout",
            "5",
            "--task-soft-timeout",
            "a=1",
            "--task-soft-timeout",
            "b=2.5",
        ]
    )
    assert cfg.soft_job_timeout == 5.0
    assert cfg.task_soft_timeouts == {"a": 1.0, "b": 2.5}
    assert cfg.soft_time_limit_for("a") == 1.0 and cfg.soft_time_limit_for("z") == 5.0
    env = {"PROCRASTINATE_PREFORK_TASK_SOFT_TIMEOUTS": "x=3,y=4"}
    assert parse([], environ=env).task_soft_timeouts == {"x": 3.0, "y": 4.0}
    settings = {"soft_job_timeout": 2, "task_soft_timeouts": {"x": 1}}
    cfg = parse([], settings=settings)
    assert (cfg.soft_job_timeout, cfg.soft_time_limit_for("x")) == (2.0, 1.0)


@pytest.mark.parametrize(
    "args",
    [
        ["--soft-job-timeout", "10", "--job-timeout", "10"],
        ["--task-soft-timeout", "a=5", "--task-timeout", "a=4"],
        ["--task-soft-timeout", "a=5", "--job-timeout", "3"],
        ["--soft-job-timeout", "20", "--task-timeout", "a=10"],
    ],
)
def test_a_soft_limit_not_below_the_hard_one_is_refused(args):
    with pytest.raises(ConfigError, match="soft") as info:
        parse(args)
    assert "\n" not in str(info.value)


def test_soft_limits_below_the_hard_ones_are_accepted():
    cfg = parse(
        [
            "--soft-job-timeout",
            "5",
            "--job-timeout",
            "10",
            "--task-soft-timeout",
            "a=20",
            "--task-timeout",
            "a=30",
        ]
    )
    assert (cfg.soft_time_limit_for("a"), cfg.time_limit_for("a")) == (20.0, 30.0)


def test_names_the_docs_give_stay_importable_from_config():
    # docs/reference/cli.md and configuration.md name these under config.
    from procrastinate_prefork.config import OPTIONS
    from procrastinate_prefork.config import ConfigError as DocumentedError

    assert DocumentedError is ConfigError
    assert OPTIONS is options.OPTIONS
