"""The fleet sweeps once per heartbeat interval, not once per host: the sweep
and the prune judge the whole fleet table, so their cost for the database must
not grow with the number of supervisors (issue 14, big tables)."""

from __future__ import annotations

import time

import psycopg

from ..fleet_helper import wait_for

INTERVAL = 1.0


def _claim(conn: psycopg.Connection, interval: float) -> bool:
    from procrastinate_prefork.fleet import queries

    row = conn.execute(queries.get("claim_sweep"), {"interval": interval}).fetchone()
    return row is not None


def test_a_turn_is_taken_once_per_interval(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM procrastinate_prefork_sweep")
        assert _claim(conn, 60.0)
        assert not _claim(conn, 60.0)
        assert _claim(conn, 0.0)


def _start(fleet_factory, name: str, interval: float, stalled_timeout: float):
    """A one-child fleet that logs its sweep turns (a DEBUG event)."""
    fleet = fleet_factory.new(name)
    fleet.start(
        "--concurrency",
        "1",
        "--hostname",
        name,
        "--heartbeat-interval",
        str(interval),
        "--stalled-timeout",
        str(stalled_timeout),
        "--log-level",
        "debug",
    )
    return fleet


def test_three_supervisors_sweep_about_once_per_interval(fleet_factory, db_url):
    fleets = [_start(fleet_factory, name, INTERVAL, 2) for name in ("a", "b", "c")]

    def turns() -> int:
        return sum(len(f.events("sweep_turn")) for f in fleets)

    wait_for(lambda: turns() >= 1, message="a first sweep turn")
    before, started = turns(), time.monotonic()
    time.sleep(8)
    taken, window = turns() - before, time.monotonic() - started
    # one turn per 0.9 interval at most, plus one at either edge of the window;
    # one sweep per host and beat would be three times the window
    assert 1 <= taken <= window / (0.9 * INTERVAL) + 2, (taken, window)
    for fleet in fleets:
        fleet.stop(timeout=10)


def test_a_supervisor_takes_no_turn_before_it_could_judge(fleet_factory, db_url):
    """A young supervisor with a short heartbeat interval would otherwise
    claim every turn, and judge nobody with them (issue 14 review)."""
    judge = _start(fleet_factory, "judge", INTERVAL, 2)
    # the young one beats twice as often: without the rule it would claim
    # nearly every turn (a turn is free 0.9 of the claimer's interval after
    # the last)
    young = _start(fleet_factory, "young", INTERVAL / 2, 30)
    wait_for(lambda: len(judge.events("sweep_turn")) >= 3, message="three turns")
    time.sleep(3)
    assert len(judge.events("sweep_turn")) >= 4
    assert young.events("sweep_turn") == []
    for fleet in (judge, young):
        fleet.stop(timeout=10)
