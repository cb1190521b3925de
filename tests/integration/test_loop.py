"""The supervisor's loop stays alive and correct whatever the database does
and whatever signals arrive: its database calls are bounded, so a stopped
backend or a locked fleet table never stops it from reaping, replacing
children and answering /live; signal bursts never leave the fleet oversized;
no signal an operator may send kills it."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator

import psutil
import psycopg
import pytest

from ..fleet_helper import defer, jobs, log_events, wait_for
from .test_health import free_port, try_probe

JSON_APP = "tests.apps.json_log_app.app"
HOST = "loop-test"
FAST = (
    "--heartbeat-interval",
    "1",
    "--stalled-timeout",
    "10",
    "--fetch-job-polling-interval",
    "2",
)


def supervisor_backend(db_url: str, supervisor_pid: int) -> int:
    """The server pid of the supervisor's own session (its application name)."""
    name = f"prefork:{HOST}:sup:{supervisor_pid}"
    with psycopg.connect(db_url, autocommit=True) as conn:

        def find() -> int | None:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [name]
            ).fetchone()
            return row[0] if row else None

        return wait_for(find, timeout=20, message="the supervisor's session")


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    try:
        os.kill(pid, signal.SIGSTOP)
    except PermissionError:
        pytest.skip("cannot signal the PostgreSQL server's processes")
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)  # whatever happens


def is_gone(pid: int) -> bool:
    """Dead and reaped: a zombie still has its pid."""
    try:
        psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    return False


def assert_loop_turns(fleet, port: int, children: int) -> None:
    """A child killed now is reaped and replaced, and /live answers."""
    before = fleet.wait_children(children)
    os.kill(before[0], signal.SIGKILL)
    wait_for(lambda: is_gone(before[0]), timeout=20, message="the killed child reaped")
    after = fleet.wait_children(children)
    assert len(set(after) - set(before)) == 1
    wait_for(
        lambda: (r := try_probe(port, "/live")) is not None and r[0] == 200,
        timeout=10,
        message="/live to answer 200",
    )


def test_stopped_backend_does_not_freeze_the_loop(fleet, db_url):
    """The supervisor's own backend SIGSTOPped (a failover without reset, a
    black-holed connection) for longer than the bound of its calls."""
    port = free_port()
    fleet.start(
        "--concurrency",
        "2",
        "--hostname",
        HOST,
        "--health-port",
        str(port),
        *FAST,
        app=JSON_APP,
    )
    backend = supervisor_backend(db_url, fleet.pid)
    with stopped(backend):
        wait_for(
            lambda: log_events(fleet, "db_timeout"),
            timeout=20,
            message="a database call to time out",
        )
        assert_loop_turns(fleet, port, 2)
    assert not fleet.exited()
    assert fleet.stop() == 0


def test_time_limits_hold_while_the_backend_is_stopped(fleet, db_url):
    fleet.start(
        "--concurrency",
        "1",
        "--hostname",
        HOST,
        "--job-timeout",
        "3",
        *FAST,
        app=JSON_APP,
    )
    [job_id] = defer(db_url, "sleep", seconds=60)
    child = fleet.running_child(job_id)
    backend = supervisor_backend(db_url, fleet.pid)
    with stopped(backend):
        wait_for(
            lambda: log_events(fleet, "time_limit"),
            timeout=20,
            message="the time limit to be enforced",
        )
        wait_for(lambda: is_gone(child), timeout=20, message="the child to be gone")
        fleet.wait_children(1, exclude=[child])
    wait_for(
        lambda: jobs(db_url, [job_id])[0]["status"] == "failed",
        timeout=20,
        message="the job to fail",
    )
    assert fleet.stop() == 0


def test_locked_fleet_table_does_not_freeze_the_loop(fleet, db_url):
    port = free_port()
    fleet.start(
        "--concurrency",
        "2",
        "--hostname",
        HOST,
        "--health-port",
        str(port),
        *FAST,
        app=JSON_APP,
    )
    with psycopg.connect(db_url) as locker:
        locker.execute(
            "LOCK TABLE procrastinate_prefork_processes IN ACCESS EXCLUSIVE MODE"
        )
        try:
            wait_for(
                lambda: log_events(fleet, "db_timeout"),
                timeout=20,
                message="a database call to time out",
            )
            assert_loop_turns(fleet, port, 2)
        finally:
            locker.rollback()
    assert not fleet.exited()
    assert fleet.stop() == 0


def test_locked_fleet_table_leaves_no_waiting_sessions(fleet, db_url):
    """A lock on the fleet table: each call of the supervisor waits on it for
    the server's lock timeout, then gives up on the server too. Given up on
    only by the supervisor's own deadline, the call's backend would go on
    waiting after the supervisor dropped its session, one more with each
    reconnection, each holding a connection slot and a place in the lock's
    queue until the lock goes."""
    fleet.start("--concurrency", "1", "--hostname", HOST, *FAST)
    pattern = f"prefork:{HOST}:sup:%"
    with psycopg.connect(db_url, autocommit=True) as watcher:

        def waiting() -> int:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name "
                "LIKE %s AND wait_event_type = 'Lock'",
                [pattern],
            ).fetchone()
            assert row is not None
            return row[0]

        with psycopg.connect(db_url) as locker:
            locker.execute(
                "LOCK TABLE procrastinate_prefork_processes IN ACCESS EXCLUSIVE MODE"
            )
            try:
                wait_for(
                    lambda: fleet.events("db_timeout"),
                    timeout=20,
                    message="a database call to time out",
                )
                most = 0
                until = time.monotonic() + 10  # several calls and reconnections
                while time.monotonic() < until:
                    most = max(most, waiting())
                    time.sleep(0.1)
            finally:
                locker.rollback()
    assert most <= 1, most
    assert fleet.stop() == 0


# ------------------------------------------------------------ signal bursts


def child_sessions(db_url: str) -> set[int]:
    """Client pids in the children's sessions (``prefork:<host>:<slot>:<pid>``)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name FROM pg_stat_activity "
            "WHERE application_name LIKE %s AND application_name NOT LIKE %s",
            [f"prefork:{HOST}:%", f"prefork:{HOST}:sup:%"],
        ).fetchall()
    return {int(name.rsplit(":", 1)[1]) for (name,) in rows}


def assert_converges(fleet, db_url: str, count: int) -> None:
    """``count`` live children, each with its session, none other, and it stays so."""

    def settled() -> bool:
        pids = [p for p in fleet.child_pids() if not is_gone(p)]
        return len(pids) == count and child_sessions(db_url) == set(pids)

    wait_for(settled, timeout=60, interval=0.2, message=f"{count} children")
    time.sleep(3)  # several heartbeats and hand-over turns later: still so
    assert settled(), (fleet.child_pids(), child_sessions(db_url))


def test_sighup_burst_converges_to_the_target(fleet, db_url):
    fleet.start("--concurrency", "2", "--hostname", HOST, *FAST)
    first = fleet.wait_children(2)
    for _ in range(20):
        fleet.signal(signal.SIGHUP)
        time.sleep(0.1)  # on purpose: signals sent at once would merge into one
    assert_converges(fleet, db_url, 2)
    assert not set(fleet.child_pids()) & set(first)  # the restart did happen
    assert fleet.stop() == 0


def test_sighup_then_sigttou_converges_to_the_smaller_target(fleet, db_url):
    fleet.start("--concurrency", "3", "--hostname", HOST, *FAST)
    fleet.wait_children(3)
    fleet.signal(signal.SIGHUP)
    fleet.signal(signal.SIGTTOU)
    assert_converges(fleet, db_url, 2)
    assert fleet.stop() == 0


# ------------------------------------------------------------ other signals


def test_sigusr1_and_sigusr2_kill_nobody(fleet, db_url):
    """Operators send SIGUSR1 by habit (log rotation); neither it nor SIGUSR2
    stops the supervisor or a child."""
    fleet.start("--concurrency", "2", "--hostname", HOST, *FAST, app=JSON_APP)
    children = fleet.wait_children(2)
    for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM):
        fleet.signal(signum)
        os.kill(children[0], signum)
    wait_for(
        lambda: len(log_events(fleet, "reopen_logs")) >= 3,
        timeout=10,
        message="the supervisor and its children to reopen their logs",
    )
    wait_for(
        lambda: log_events(fleet, "signal_ignored"),
        timeout=10,
        message="SIGUSR2 to be logged and ignored",
    )
    time.sleep(1)  # a turn of the loop and of the children's event loops later
    assert not fleet.exited()
    assert fleet.child_pids() == children
    reopened = {e["pid"] for e in log_events(fleet, "reopen_logs")}
    assert reopened == {fleet.pid, *children}
    assert fleet.stop() == 0


def test_task_timeout_for_an_unknown_task_is_warned_about(fleet):
    fleet.start(
        "--concurrency",
        "1",
        "--hostname",
        HOST,
        "--task-timeout",
        "nosuch=1",
        "--task-timeout",
        "sleep=5",
        "--task-soft-timeout",
        "sleep=2",
        "--task-soft-timeout",
        "nosoft=1",
        app=JSON_APP,
    )
    events = {e["option"]: e for e in log_events(fleet, "unknown_task_timeout")}
    assert events.keys() == {"--task-timeout", "--task-soft-timeout"}
    assert events["--task-timeout"]["tasks"] == ["nosuch"]
    assert events["--task-soft-timeout"]["tasks"] == ["nosoft"]
    assert {e["level"] for e in events.values()} == {"WARNING"}
    assert fleet.stop() == 0
