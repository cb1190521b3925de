"""procrastinate's logging options on ``procrastinate-prefork worker``:
--log-format, --log-format-style, --log-level, the deprecated -v, and their
PROCRASTINATE_* variables, also over logging the app set up itself (under
Django's LOGGING: test_django.py)."""

from __future__ import annotations

import re

import pytest

from ..fleet_helper import defer, error_line, jobs


def _lines(fleet, pattern: str) -> list[str]:
    return [line for line in fleet.log().splitlines() if re.match(pattern, line)]


def test_log_format_and_style_shape_every_line(fleet, db_url):
    ids = defer(db_url, "cpu", count=4, ms=1)
    code = fleet.run_to_exit(
        "--concurrency",
        "2",
        "--one-shot",
        "--log-format",
        "{process}|{levelname}|{name}|{message}",
        "--log-format-style",
        "{",
    )
    assert code == 0, fleet.log()
    assert {r["status"] for r in jobs(db_url, ids)} == {"succeeded"}
    supervisor = _lines(
        fleet, rf"{fleet.pid}\|INFO\|procrastinate_prefork\.supervisor\|"
    )
    children = _lines(fleet, r"\d+\|INFO\|procrastinate\.worker")
    assert supervisor and children, fleet.log()
    assert all(not line.startswith(f"{fleet.pid}|") for line in children)


def test_procrastinate_environment_variables(fleet, db_url):
    ids = defer(db_url, "cpu", count=2, ms=1)
    code = fleet.run_to_exit(
        "--concurrency",
        "1",
        "--one-shot",
        env={
            "PROCRASTINATE_LOG_FORMAT": "$levelname:$name:$message",
            "PROCRASTINATE_LOG_FORMAT_STYLE": "$",
            "PROCRASTINATE_LOG_LEVEL": "warning",
        },
    )
    assert code == 0, fleet.log()
    assert {r["status"] for r in jobs(db_url, ids)} == {"succeeded"}
    assert not _lines(fleet, r"(INFO|DEBUG):")  # nothing below warning
    # at warning, the supervisor still says nothing but the banner: the level
    # applied to every logger (root included), and the format is in use
    assert not _lines(fleet, r"\d{4}-\d\d-\d\d ")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_deprecated_verbose_means_debug(fleet, db_url, how):
    args, env = (["-v"], {}) if how == "flag" else ([], {"PROCRASTINATE_VERBOSE": "1"})
    code = fleet.run_to_exit(
        "--concurrency",
        "1",
        "--one-shot",
        "--log-format",
        "%(levelname)s %(name)s: %(message)s",
        *args,
        env=env,
    )
    assert code == 0, fleet.log()
    assert _lines(fleet, r"DEBUG ")
    assert _lines(fleet, r"WARNING procrastinate_prefork: ")  # the deprecation


def test_log_level_wins_over_verbose(fleet, db_url):
    code = fleet.run_to_exit(
        "--concurrency",
        "1",
        "--one-shot",
        "--log-level",
        "info",
        "--log-format",
        "%(levelname)s %(name)s: %(message)s",
        env={"PROCRASTINATE_VERBOSE": "2"},
    )
    assert code == 0, fleet.log()
    assert not _lines(fleet, r"DEBUG ") and _lines(fleet, r"INFO ")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--log-format-style", "%%"], "--log-format-style"),
        (["--log-format", "no fields", "--log-format-style", "{"], "--log-format"),
        (["--log-level", "loud"], "--log-level"),
    ],
)
def test_bad_logging_options_exit_2(fleet, args, expected):
    assert fleet.run_to_exit(*args, timeout=30) == 2
    assert expected in error_line(fleet)
    assert fleet.events("child_started") == []


def test_log_format_applies_over_an_apps_own_logging(fleet, db_url):
    """tests.apps.json_log_app configures logging when it is imported (JSON
    lines): a --log-format given replaces its formatter, as over Django's
    LOGGING (test_django.py)."""
    ids = defer(db_url, "cpu", count=2, ms=1)
    code = fleet.run_to_exit(
        "--concurrency",
        "1",
        "--one-shot",
        "--log-format",
        "{levelname}|{name}|{message}",
        "--log-format-style",
        "{",
        app="tests.apps.json_log_app.app",
    )
    assert code == 0, fleet.log()
    assert {r["status"] for r in jobs(db_url, ids)} == {"succeeded"}
    assert _lines(fleet, r"INFO\|procrastinate_prefork\.supervisor\|")
    assert _lines(fleet, r"INFO\|procrastinate\.worker")
    assert not _lines(fleet, r"\{")  # none of the app's JSON lines
