"""The queue depth metric is counted once per fleet, not once per host: one
supervisor counts procrastinate's jobs and publishes the counts, the others
expose what it published, with its age (issue 25, item 4)."""

from __future__ import annotations

import psycopg

from ..fleet_helper import wait_for
from .test_metrics import defer_to_queues, free_port, scrape_until, series

P = "procrastinate_prefork_"


def _start(fleet_factory, name: str, interval: float):
    fleet = fleet_factory.new(name)
    port = free_port()
    fleet.start(
        "--concurrency", "1", "--hostname", name, "--health-port", str(port),
        "--heartbeat-interval", str(interval), "--log-level", "debug",
    )  # fmt: skip
    return fleet, port


def _supervisor_row(db_url: str, pid: int) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT id FROM procrastinate_prefork_processes "
            "WHERE kind = 'supervisor' AND pid = %s AND state <> 'stopped'",
            [pid],
        ).fetchone()
    assert row is not None
    return int(row[0])


def _writer(db_url: str) -> int | None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT queue_jobs_by FROM procrastinate_prefork_sweep"
        ).fetchone()
    return None if row is None else row[0]


def test_one_supervisor_counts_the_queues_for_the_fleet(fleet_factory, db_url):
    # "quick" beats every 0.5 s, so the published counts are never older than
    # about that; "slow" beats every 4 s and would count only counts older
    # than 3.6 s: it reads them, it never counts them
    quick, quick_port = _start(fleet_factory, "quick", 0.5)
    slow, slow_port = _start(fleet_factory, "slow", 4.0)
    defer_to_queues(db_url, "noop", ["later1", "later2"], later=True)
    defer_to_queues(db_url, "noop", ["later1"], later=True)
    todo = (("queue", "later1"), ("status", "todo"))

    def published(samples) -> bool:
        return series(samples, P + "queue_jobs").get(todo) == 2

    # both expose the counts: the slow one's after two of its own beats
    for port in (quick_port, slow_port):
        got = scrape_until(port, published, "the queue depth")
        [age] = series(got, P + "queue_jobs_age_seconds").values()
        assert 0 <= age < 10
        assert (
            series(got, P + "queue_jobs")[(("queue", "later2"), ("status", "todo"))]
            == 1
        )
    quick_counts = quick.events("queue_depth_counted")
    assert len(quick_counts) >= 3, quick_counts
    # the slow one showed the counts (it read them) and never counted them
    assert slow.events("queue_depth_counted") == []
    assert _writer(db_url) == _supervisor_row(db_url, quick.pid)
    for fleet in (quick, slow):
        fleet.stop(timeout=10)


def test_another_supervisor_counts_when_the_counter_is_gone(fleet_factory, db_url):
    """Counting is not tied to one host: when the supervisor that counted
    stops, the next one whose turn comes counts."""
    quick, _ = _start(fleet_factory, "quick", 0.5)
    other, other_port = _start(fleet_factory, "other", 1.0)
    wait_for(lambda: quick.events("queue_depth_counted"), message="quick counts")
    quick.stop(timeout=10)
    wait_for(lambda: other.events("queue_depth_counted"), message="other counts")
    defer_to_queues(db_url, "noop", ["after"], later=True)
    todo = (("queue", "after"), ("status", "todo"))
    scrape_until(
        other_port,
        lambda s: series(s, P + "queue_jobs").get(todo) == 1,
        "the counts of the one left",
    )
    assert _writer(db_url) == _supervisor_row(db_url, other.pid)
    other.stop(timeout=10)
