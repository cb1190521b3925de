"""A child's side of its finished-job ring (procrastinate_prefork.child.jobring.Outbox)
on a real shared-memory ring: what the ring has no room for waits in the
child and is counted once, exactly, when the supervisor has read."""

from __future__ import annotations

import logging
import os

import pytest

from procrastinate_prefork.child import jobring
from procrastinate_prefork.child.jobring import Finished, JobRing, Outbox, Outcome
from procrastinate_prefork.observability import metrics


def noop(i: int, task: str = "noop") -> Finished:
    return Finished("default", task, Outcome.SUCCEEDED, 0.001 * (i % 7))


def observed_one_by_one(records: list[Finished]) -> metrics.Totals:
    totals = metrics.Totals()
    for record in records:
        totals.finished(record)
    return totals


def test_outbox_holds_what_a_full_ring_cannot_take_and_loses_nothing():
    ring = JobRing(2)
    outbox = Outbox(ring, 1, metrics.BUCKETS)
    sent = [noop(i, f"t{i % 3}") for i in range(jobring.RING * 5)]
    for record in sent:
        outbox.add(record)
    # the supervisor has read nothing: the ring is full, the rest waits merged
    assert ring.written(1) == jobring.RING
    held = len(sent) - jobring.RING
    assert (outbox.held, ring.held(1)) == (held, held)
    assert len(outbox.waiting) < held

    totals = metrics.Totals()
    while outbox.waiting:
        metrics.drain(ring, 1, totals)  # a supervisor turn
        outbox.flush()  # the child's next beat
    metrics.drain(ring, 1, totals)

    expected = observed_one_by_one(sent)
    assert totals.jobs == expected.jobs
    assert sum(totals.per_minute.values()) == len(sent)  # the live page's too
    assert totals.lost_records == 0
    assert ring.held(1) == 0
    for key, hist in expected.durations.items():
        got = totals.durations[key]
        assert (got.buckets, got.count) == (hist.buckets, hist.count)
        assert got.total == pytest.approx(hist.total)


def test_outbox_keeps_order_once_records_wait():
    """A record that finds others waiting queues behind them even if the ring
    has room: no later job overtakes an earlier one's labels for long."""
    ring = JobRing(1)
    outbox = Outbox(ring, 0, metrics.BUCKETS)
    for i in range(jobring.RING + 1):
        outbox.add(noop(0, f"t{i}"))
    metrics.drain(ring, 0, metrics.Totals())
    outbox.add(noop(0, "late"))
    records, _ = ring.read(0)
    assert [r.task for r in records] == [f"t{jobring.RING}", "late"]


def test_outbox_merges_new_labels_past_its_bound_and_still_counts_them():
    ring = JobRing(1)
    outbox = Outbox(ring, 0, metrics.BUCKETS)
    count = jobring.RING + jobring.OUTBOX_KEYS + 50
    for i in range(count):
        outbox.add(Finished("q", f"task{i}", Outcome.FAILED, None))
    assert len(outbox.waiting) == jobring.OUTBOX_KEYS + 1  # + the merged one
    totals = metrics.Totals(label_limit=10_000)
    while outbox.waiting:
        metrics.drain(ring, 0, totals)
        outbox.flush()
    metrics.drain(ring, 0, totals)
    assert sum(totals.jobs.values()) == count
    assert totals.jobs[(metrics.OTHER, metrics.OTHER, "failed")] == 50
    assert totals.lost_records == 0


def test_outbox_in_a_forked_child_hands_every_record_over():
    """The child writes far more than the ring holds while the parent reads
    at its own pace: every job is counted once, none lost."""
    ring = JobRing(1)
    jobs = jobring.RING * 40
    pid = os.fork()
    if pid == 0:
        outbox = Outbox(ring, 0, metrics.BUCKETS)
        for i in range(jobs):
            outbox.add(noop(i))
        while outbox.waiting:
            outbox.flush()
        os._exit(0)
    totals = metrics.Totals()
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        metrics.drain(ring, 0, totals)
    metrics.drain_dead(ring, 0, totals)
    assert totals.jobs == {("default", "noop", "succeeded"): jobs}
    assert totals.durations[("default", "noop")].count == jobs
    assert totals.lost_records == 0


def test_a_child_dead_with_held_jobs_has_them_counted_lost(caplog):
    ring = JobRing(1)
    outbox = Outbox(ring, 0, metrics.BUCKETS)
    for i in range(jobring.RING + 3):
        outbox.add(noop(i))
    totals = metrics.Totals()
    with caplog.at_level(logging.WARNING, "procrastinate_prefork.metrics"):
        metrics.drain_dead(ring, 0, totals)
    assert sum(totals.jobs.values()) == jobring.RING
    assert totals.lost_records == 3
    events = [r for r in caplog.records if r.__dict__.get("action")]
    assert [(r.action, r.jobs) for r in events] == [("job_records_lost", 3)]  # type: ignore[attr-defined]
    # the slot is ready for the next child
    assert (ring.written(0), ring.held(0), ring.read(0)) == (0, 0, ([], 0))
