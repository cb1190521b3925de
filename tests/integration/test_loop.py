"""The supervisor's loop stays alive and correct whatever the database does
and whatever signals arrive: its database calls are bounded, so a stopped
backend or a locked fleet table never stops it from reaping, replacing
children and answering /live; signal bursts never leave the fleet oversized;
no signal an operator may send kills it."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import psutil
import psycopg
import pytest

from ..fleet_helper import log_events, wait_for
from .test_health import free_port, try_probe

JSON_APP = "tests.apps.json_log_app.app"
HOST = "loop-test"
FAST = ("--heartbeat-interval", "1", "--stalled-timeout", "10",
        "--fetch-job-polling-interval", "2")


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
    wait_for(lambda: (r := try_probe(port, "/live")) is not None and r[0] == 200,
             timeout=10, message="/live to answer 200")


def test_stopped_backend_does_not_freeze_the_loop(fleet, db_url):
    """The supervisor's own backend SIGSTOPped (a failover without reset, a
    black-holed connection) for longer than the bound of its calls."""
    port = free_port()
    fleet.start("--concurrency", "2", "--hostname", HOST, "--health-port", str(port),
                *FAST, app=JSON_APP)
    backend = supervisor_backend(db_url, fleet.pid)
    with stopped(backend):
        wait_for(lambda: log_events(fleet, "db_timeout"), timeout=20,
                 message="a database call to time out")
        assert_loop_turns(fleet, port, 2)
    assert not fleet.exited()
    assert fleet.stop() == 0


def test_locked_fleet_table_does_not_freeze_the_loop(fleet, db_url):
    port = free_port()
    fleet.start("--concurrency", "2", "--hostname", HOST, "--health-port", str(port),
                *FAST, app=JSON_APP)
    with psycopg.connect(db_url) as locker:
        locker.execute(
            "LOCK TABLE procrastinate_prefork_processes IN ACCESS EXCLUSIVE MODE"
        )
        try:
            wait_for(lambda: log_events(fleet, "db_timeout"), timeout=20,
                     message="a database call to time out")
            assert_loop_turns(fleet, port, 2)
        finally:
            locker.rollback()
    assert not fleet.exited()
    assert fleet.stop() == 0
