"""procrastinate's periodic deferrer runs in one child per host, not in every
child, and a child that dies hands it on (issue 25, item 4). Which process
runs a deferrer is read from procrastinate's own events (``wait_next_tick``,
one per turn of a deferrer's loop), not from the jobs, which the database
deduplicates anyway."""

from __future__ import annotations

import os
import signal
import time

import psycopg

from ..fleet_helper import wait_for

APP = "tests.apps.periodic_app.app"


def _ticks(db_url: str) -> list[int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT (args->>'timestamp')::bigint FROM procrastinate_jobs "
            "WHERE task_name = 'tick' ORDER BY 1"
        ).fetchall()
    return [int(r[0]) for r in rows]


def _deferrers(fleet, since: float = 0.0) -> set[int]:
    """The processes whose deferrer loop turned (after ``since``, a line
    count of events.jsonl)."""
    events = fleet.events()[int(since) :]
    return {e["process"] for e in events if e.get("action") == "wait_next_tick"}


def test_one_child_runs_the_periodic_deferrer_and_hands_it_on(fleet, db_url):
    fleet.start("--concurrency", "3", "--log-level", "debug", app=APP)
    wait_for(lambda: len(_ticks(db_url)) >= 4, message="four ticks deferred")
    children = fleet.child_pids()
    assert len(children) == 3
    [runner] = _deferrers(fleet)  # one deferrer, not three
    assert runner in children
    [designated] = fleet.events("periodic_deferrer_designated")
    assert (designated["slot"], designated["pid"]) == (0, runner)
    assert [e["process"] for e in fleet.events("periodic_deferrer_started")] == [runner]
    ticks = _ticks(db_url)
    assert len(ticks) == len(set(ticks))

    # the deferrer's child dies: another takes the deferrer on
    mark = len(fleet.events())
    before = len(_ticks(db_url))
    os.kill(runner, signal.SIGKILL)
    wait_for(
        lambda: _deferrers(fleet, mark) - {runner},
        message="another child's deferrer",
    )
    [successor] = _deferrers(fleet, mark) - {runner}
    assert successor != runner
    wait_for(lambda: len(_ticks(db_url)) >= before + 3, message="ticks go on")
    # a while later, still one deferrer on the host
    mark = len(fleet.events())
    time.sleep(2.5)
    assert _deferrers(fleet, mark) == {successor}
    ticks = _ticks(db_url)
    assert len(ticks) == len(set(ticks))
    fleet.stop(timeout=15)
