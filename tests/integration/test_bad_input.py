"""Bad input: each gets a clear error (one line, non-zero exit) or, inside the
queue, a failed job, and never a lost job or a crash-looping fleet.

Covered elsewhere: a bad --concurrency, an unknown option, an app that does
not import, the database unreachable at start, procrastinate's schema missing,
a bad PROCRASTINATE_WORKER_WAIT (test_core.py); bad Django settings and
options (test_django.py); a bad hook path (test_lifecycle.py); the health
view's bad parameters and methods, the probe port in use (test_health.py);
the database lost mid-run (test_db_outage.py).
"""

from __future__ import annotations

import os
import signal

import psycopg
import pytest

from procrastinate_prefork.fleet import schema

from ..fleet_helper import defer, jobs, status_counts, wait_for

CHAOS_APP = "tests.apps.chaos_app.app"


def assert_refused(fleet, code: int, name: str) -> None:
    """Exit ``code``, nothing forked, no traceback, and one line naming
    ``name`` (the option or variable at fault), whatever its wording: the
    only line on bad input (exit 2); the last, after the banner, when the
    database refuses (exit 1)."""
    log = fleet.log()
    assert code != 0, log
    lines = [line for line in log.splitlines() if line.strip()]
    if code == 2:
        assert len(lines) == 1, log
    assert name in lines[-1], lines[-1]
    assert "Traceback" not in log
    assert fleet.events("child_started") == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--stalled-timeout", "0"), "--stalled-timeout"),
        (("--heartbeat-interval", "soon"), "--heartbeat-interval"),
        (("--child-timeout", "nan"), "--child-timeout"),
        (("--max-crash-retries", "-1"), "--max-crash-retries"),
        (("--job-timeout", "-5"), "--job-timeout"),
        (("--task-timeout", "slow"), "--task-timeout"),
        (("--autoscale", "4,2"), "--autoscale"),
        (("--delete-jobs", "sometimes"), "--delete-jobs"),
        (("--log-level", "loud"), "--log-level"),
        (("--health-port", "70000"), "--health-port"),
        (("--max-memory-per-child", "lots"), "--max-memory-per-child"),
        (("--heartbeat-interval", "20"), "--heartbeat-interval"),
        (("--stalled-timeout", "1e16"), "--stalled-timeout"),
        (("--job-timeout", "1e16"), "--job-timeout"),
        (("--task-timeout", "chaos_cpu=1e16"), "--task-timeout"),
        (("--queues", "q" * 300), "--queues"),
        (
            ("--task-soft-timeout", "chaos_cpu=5", "--task-timeout", "chaos_cpu=5"),
            "chaos_cpu",
        ),  # names the task at fault
    ],
)
def test_invalid_option_value_exits_2(fleet, db_url, args, expected):
    [job_id] = defer(db_url, "chaos_cpu", ms=1)
    assert_refused(fleet, fleet.run_to_exit(*args, app=CHAOS_APP, timeout=30), expected)
    assert fleet.run_to_exit(*args, app=CHAOS_APP, timeout=30) == 2
    assert jobs(db_url, [job_id])[0]["status"] == "todo"  # untouched, not lost


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"PROCRASTINATE_PREFORK_STALLED_TIMEOUT": "-1"},
            "PROCRASTINATE_PREFORK_STALLED_TIMEOUT",
        ),
        ({"PROCRASTINATE_WORKER_CONCURRENCY": "0"}, "PROCRASTINATE_WORKER_CONCURRENCY"),
        (
            {"PROCRASTINATE_WORKER_DELETE_JOBS": "maybe"},
            "PROCRASTINATE_WORKER_DELETE_JOBS",
        ),
        (
            {"PROCRASTINATE_PREFORK_LISTEN_NOTIFY": "sometimes"},
            "PROCRASTINATE_PREFORK_LISTEN_NOTIFY",
        ),
        (
            {"PROCRASTINATE_PREFORK_LISTEN_DSN": "host=db password=SECRET-77 dangling"},
            "PROCRASTINATE_PREFORK_LISTEN_DSN",
        ),
        (
            {"PROCRASTINATE_PREFORK_HOSTNAME": "x" * 300},
            "PROCRASTINATE_PREFORK_HOSTNAME",
        ),
    ],
)
def test_invalid_environment_value_exits_2(fleet, env, expected):
    code = fleet.run_to_exit(app=CHAOS_APP, env=env, timeout=30)
    assert code == 2
    assert_refused(fleet, code, expected)


def test_command_line_beats_a_bad_environment_value(fleet):
    fleet.start(
        "--concurrency",
        "1",
        "--stalled-timeout",
        "10",
        app=CHAOS_APP,
        env={"PROCRASTINATE_PREFORK_STALLED_TIMEOUT": "never"},
    )
    with psycopg.connect(fleet.db_url, autocommit=True) as conn:
        [(stalled,)] = conn.execute(
            "SELECT stalled_timeout FROM procrastinate_prefork_processes "
            "WHERE kind = 'supervisor'"
        ).fetchall()
    assert stalled == 10
    assert fleet.stop() == 0


def test_prefork_tables_missing_exits_1(fleet, db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(schema.drop_sql())
    [job_id] = defer(db_url, "chaos_cpu", ms=1)
    code = fleet.run_to_exit(app=CHAOS_APP, timeout=30)
    assert code == 1
    # no option at fault: the last line says what to run, naming the command
    assert_refused(fleet, code, "schema")
    assert jobs(db_url, [job_id])[0]["status"] == "todo"


def test_unknown_task_fails_its_job_and_the_fleet_goes_on(fleet, db_url):
    fleet.start("--concurrency", "2", app=CHAOS_APP)
    children = fleet.wait_children(2)
    unknown = defer(db_url, "no_such_task", count=5, x=1)
    good = defer(db_url, "chaos_cpu", count=20, ms=1)
    wait_for(
        lambda: all(r["status"] in ("failed", "succeeded") for r in jobs(db_url)),
        timeout=30,
        message="every job to end",
    )
    assert {r["status"] for r in jobs(db_url, unknown)} == {"failed"}
    assert {r["status"] for r in jobs(db_url, good)} == {"succeeded"}
    assert fleet.child_pids() == children  # no child died for it
    assert fleet.stop() == 0


@pytest.mark.parametrize(
    "args",
    [
        {},  # missing argument
        {"n": 1, "extra": 2},  # unexpected argument
        {"n": "three"},  # the task's own check
    ],
)
def test_arguments_the_task_rejects_fail_the_job(fleet, db_url, args):
    fleet.start("--concurrency", "1", app=CHAOS_APP)
    [child] = fleet.wait_children(1)
    [bad] = defer(db_url, "chaos_strict", **args)
    [good] = defer(db_url, "chaos_strict", n=1)
    wait_for(
        lambda: jobs(db_url, [good])[0]["status"] == "succeeded",
        timeout=30,
        message="the good job to succeed",
    )
    assert jobs(db_url, [bad])[0]["status"] == "failed"
    assert fleet.child_pids() == [child]
    assert fleet.stop() == 0


def test_oversized_arguments_run_and_do_not_flood_the_logs(fleet, db_url):
    """A job with 50 MB of arguments: it runs (procrastinate has no size
    limit), its child survives a kill under it (the recovery reads its row),
    the other jobs are not held up, and the arguments never reach the logs."""
    fleet.start("--concurrency", "2", app=CHAOS_APP)
    [big] = defer(db_url, "chaos_sleep", seconds=3, payload="x" * (50 * 2**20))
    others = defer(db_url, "chaos_cpu", count=20, ms=1)
    victim = wait_for(
        lambda: next(
            (
                pid
                for pid, state in fleet.child_states().items()
                if state.startswith(f"busy job {big} ")
            ),
            None,
        ),
        timeout=30,
        message="the big job to start",
    )
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: all(r["status"] == "succeeded" for r in jobs(db_url, others)),
        timeout=60,
        message="the other jobs to succeed",
    )
    wait_for(
        lambda: status_counts(db_url) == {"succeeded": 21},
        timeout=60,
        message="the big job to succeed after the kill",
    )
    assert big in [e["job_id"] for e in fleet.events("job_recovered")]
    assert len(fleet.log()) < 2**20, "job arguments in the logs"
    assert fleet.stop() == 0


def test_malformed_dsn_never_shows_its_password(fleet):
    """libpq quotes the bad part of a DSN in its error: here, the password."""
    code = fleet.run_to_exit(
        app=CHAOS_APP,
        timeout=30,
        env={"DATABASE_URL": "postgresql://u:Dsn%zzPw@host/db"},
    )
    assert code == 1
    # no option at fault (libpq's own error, quoted without the password)
    assert "Traceback" not in fleet.log()
    assert fleet.events("child_started") == []
    assert "zzPw" not in fleet.log()
