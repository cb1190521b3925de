"""Python 3.12+ warns (DeprecationWarning) when a process with more than one
thread forks. The supervisor forks at start and again to replace a dead
child: at neither moment may a thread run in it, whatever ran before (the
probe port, Django's async ORM and its connection pool, psycopg)."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from ..fleet_helper import Fleet, defer, jobs, wait_for
from .test_health import free_port

FORK_WARNS = sys.version_info >= (3, 12)

pytestmark = pytest.mark.skipif(
    not FORK_WARNS, reason="Python warns about fork() with threads from 3.12"
)

# Shown wherever it comes from (by default DeprecationWarnings outside
# __main__ are hidden).
WARNINGS_ON = {"PYTHONWARNINGS": "always::DeprecationWarning"}
FORK_WARNING = "use of fork() may lead to deadlocks"


def exercise_forks(fleet: Fleet, db_url: str, task: str) -> None:
    """Jobs run, a child is killed and re-forked, the fleet drains and stops."""
    ids = defer(db_url, task, 4)
    wait_for(
        lambda: {r["status"] for r in jobs(db_url, ids)} == {"succeeded"},
        timeout=30,
        message="the first jobs to succeed",
    )
    victim = fleet.wait_children(2)[0]
    os.kill(victim, signal.SIGKILL)
    fleet.wait_children(2, timeout=30, exclude=[victim])
    more = defer(db_url, task, 4)
    wait_for(
        lambda: {r["status"] for r in jobs(db_url, more)} == {"succeeded"},
        timeout=30,
        message="jobs after the re-fork to succeed",
    )
    assert fleet.stop() == 0, fleet.log()
    log = fleet.log()
    assert FORK_WARNING not in log, log
    assert "Traceback" not in log, log


def test_plain_fleet_forks_without_threads(fleet, db_url):
    fleet.start(
        "--concurrency", "2", "--health-port", str(free_port()), env=WARNINGS_ON
    )
    exercise_forks(fleet, db_url, "cpu")
