"""What a new user sees when something is missing or mistyped: exit codes,
one-line errors with the hint that fits the project (plain or Django)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ..fleet_helper import APP, REPO

MANAGE = REPO / "demo_project" / "manage.py"


def cli(
    db_url: str, *args: str, app: str | None = APP
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "procrastinate_prefork.cli",
            *(["--app", app] if app else []),
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DATABASE_URL": db_url, "PYTHONPATH": str(REPO)},
    )


def manage(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("django")
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "DATABASE_URL": db_url,
            "PYTHONPATH": str(REPO),
            "DJANGO_SETTINGS_MODULE": "tests.django_project.settings",
        },
    )


def test_status_exit_code_follows_health_with_or_without_check(db_url):
    table = cli(db_url, "status")
    assert table.returncode == 1 and "UNHEALTHY" in table.stdout
    assert cli(db_url, "status", "--check").returncode == 1
    assert cli(db_url, "status", "--json").returncode == 1


def test_status_before_the_schema_says_how_to_create_it(empty_db_url):
    result = cli(empty_db_url, "status")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert f"procrastinate-prefork --app {APP} schema --apply" in line


def test_schema_apply_before_procrastinates_asks_for_it_first(empty_db_url):
    result = cli(empty_db_url, "schema", "--apply")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert f"procrastinate --app {APP} schema --apply" in line
    assert "Traceback" not in result.stderr
    assert cli(empty_db_url, "status").returncode == 1  # nothing was created


def test_app_after_the_command_is_accepted(db_url):
    result = cli(db_url, "status", "--app", APP, app=None)
    assert result.returncode == 1, result.stderr  # ran: the fleet is empty
    assert "UNHEALTHY" in result.stdout


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("--concurency", "--concurrency"),
        ("--max-jobs-per-chlid=3", "--max-jobs-per-child"),
    ],
)
def test_mistyped_flag_gets_a_suggestion(db_url, typo, meant):
    result = cli(db_url, "worker", typo, "2")
    assert result.returncode == 2
    # one line, not the usage of every option with the suggestion last
    [line] = result.stderr.splitlines()
    assert f"did you mean {meant}?" in line


@pytest.mark.parametrize(
    "args", [("worker", "--concurrency"), ("worker", "--bogus"), ("status", "--jsn")]
)
def test_bad_flag_is_one_line(db_url, args):
    result = cli(db_url, *args)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert args[-1] in line


UNREACHABLE = "postgresql://nobody@127.0.0.1:1/x"


@pytest.mark.parametrize(
    "command", [("worker", "--concurrency", "1"), ("schema", "--apply")]
)
def test_unreachable_database_names_the_apps_connector(command):
    result = cli(UNREACHABLE, *command)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = result.stderr.splitlines()[-1]  # the worker's banner comes first
    assert APP in line  # where the connection settings come from


@pytest.mark.parametrize(
    "args",
    [
        ("--pool", "cpu=reports:4", "--concurrency", "3"),
        ("--pool", "cpu=reports:4", "--pool", "cpu=emails:1"),
        ("--pool", "all=*:1", "--pool", "io=emails:1"),
    ],
)
def test_bad_pools_are_one_line_exit_2_in_both_front_ends(args):
    # refused before any connection: the database is never reached
    plain = cli(UNREACHABLE, "worker", *args)
    assert plain.returncode == 2
    [line] = plain.stderr.splitlines()
    assert "--pool" in line
    django = manage(UNREACHABLE, "prefork_worker", *args)
    assert django.returncode == 2
    [line] = [line for line in django.stderr.splitlines() if "rror" in line]
    assert line.startswith("CommandError: ") and "--pool" in line


def test_worker_help_shows_defaults_variables_and_choices(db_url):
    text = " ".join(cli(db_url, "worker", "--help", app=None).stdout.split())
    assert (
        "PROCRASTINATE_WORKER_CONCURRENCY" in text and "PROCRASTINATE_LOG_LEVEL" in text
    )
    assert "--log-level {debug,info,warning,error,critical}" in text
    assert "(default: 30.0; env: PROCRASTINATE_PREFORK_STALLED_TIMEOUT)" in text


# ------------------------------------------------------------------ Django


def test_django_worker_errors_are_command_errors(empty_db_url):
    result = manage(empty_db_url, "prefork_worker", "--concurrency", "1")
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if "rror" in line]
    assert line.startswith("CommandError: ") and "`manage.py migrate`" in line
    assert "schema --apply" not in result.stderr


def test_django_unreachable_database_names_the_setting():
    result = manage(UNREACHABLE, "prefork_worker", "--concurrency", "1")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "rror" in line]
    assert "DATABASES['default']" in line


def test_django_status_before_migrate_and_mistyped_flag(empty_db_url):
    status = manage(empty_db_url, "prefork_status")
    assert status.returncode == 1 and "`manage.py migrate`" in status.stderr
    typo = manage(empty_db_url, "prefork_worker", "--concurency", "2")
    assert typo.returncode == 2
    [line] = typo.stderr.splitlines()  # without the usage of every option
    assert "did you mean --concurrency?" in line
