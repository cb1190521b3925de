"""Metrics' pure parts: the finished-job ring, the totals, the exposition
(procrastinate_prefork.child.jobring, procrastinate_prefork.observability.metrics)."""

from __future__ import annotations

import os
import types
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from procrastinate_prefork.child import jobring
from procrastinate_prefork.child.jobring import Finished, JobRing, Outcome
from procrastinate_prefork.fleet.snapshot import ChildSnapshot, FleetSnapshot
from procrastinate_prefork.observability import metrics, probe
from procrastinate_prefork.supervisor import policy


def record(i: int, outcome: Outcome = Outcome.SUCCEEDED) -> Finished:
    return Finished("q", f"t{i % 2}", outcome, i / 10)


def test_ring_counts_each_record_once():
    ring = JobRing(2)
    totals = metrics.Totals()
    for i in range(3):
        ring.append(1, record(i))
    metrics.drain(ring, 1, totals)
    metrics.drain(ring, 1, totals)  # nothing new: nothing counted again
    ring.append(1, record(3, Outcome.FAILED))
    metrics.drain(ring, 1, totals)
    assert totals.jobs == {
        ("q", "t0", "succeeded"): 2,
        ("q", "t1", "succeeded"): 1,
        ("q", "t1", "failed"): 1,
    }
    assert totals.durations[("q", "t0")].count == 2
    assert ring.written(1) == 4
    assert ring.written(0) == 0  # other slots untouched


def test_ring_keeps_a_job_that_never_ran_apart():
    ring = JobRing(1)
    ring.append(0, Finished("q", "unknown", Outcome.FAILED, None))
    ring.append(0, Finished("q", "t", Outcome.FAILED, 0.0))
    records, _ = ring.read(0)
    assert [r.duration for r in records] == [None, 0.0]


def test_full_ring_refuses_a_record_and_keeps_the_unread():
    ring = JobRing(1)
    assert all(ring.append(0, record(i)) for i in range(jobring.RING))
    assert not ring.append(0, record(99))
    records, lost = ring.read(0)
    assert (records, lost) == ([record(i) for i in range(jobring.RING)], 0)
    assert ring.append(0, record(99))  # read: room again
    assert ring.read(0) == ([record(99)], 0)


def test_ring_of_a_new_child_starts_over():
    ring = JobRing(1)
    for i in range(3):
        ring.append(0, record(i))
    ring.read(0)
    ring.clear(0)
    ring.append(0, record(7))
    assert ring.read(0) == ([record(7)], 0)


def test_ring_shared_with_a_forked_child():
    ring = JobRing(1)
    pid = os.fork()
    if pid == 0:
        ring.append(0, Finished("é" * 200, "task", Outcome.RETRIED, 1.5))
        os._exit(0)
    os.waitpid(pid, 0)
    [got], _ = ring.read(0)
    assert got.outcome is Outcome.RETRIED
    assert got.queue == ("é" * 60)  # cut at NAME_BYTES, on a character


@pytest.mark.parametrize(
    ("args", "cause"),
    [
        ((0, None, False, False, False, False), "exit"),
        ((None, 9, False, False, False, False), "signal"),
        ((policy.EXIT_RECYCLE, None, False, False, False, False), "recycled"),
        ((None, 9, False, True, True, False), "wedged"),
        ((None, 9, True, False, True, False), "time_limit"),
        ((None, 9, False, False, True, False), "killed"),
        ((0, None, False, False, False, True), "retired"),
    ],
)
def test_exit_cause(args, cause):
    code, signum, timed_out, wedged, killed, retiring = args
    assert (
        metrics.exit_cause(
            code,
            signum,
            timed_out=timed_out,
            wedged=wedged,
            killed=killed,
            retiring=retiring,
        )
        == cause
    )


def test_queue_counts_fill_missing_statuses():
    assert metrics.queue_counts([("a", "todo", 3), ("b", "doing", 1)]) == (
        {
            ("a", "todo"): 3,
            ("a", "doing"): 0,
            ("b", "todo"): 0,
            ("b", "doing"): 1,
        },
        False,
    )


def test_queue_counts_keep_the_biggest_queues_and_sum_the_others():
    rows = [("a", "todo", 1), ("b", "todo", 5), ("c", "doing", 2), ("d", "todo", 2)]
    other = metrics.OTHER
    assert metrics.queue_counts(rows, limit=2) == (
        {
            ("b", "todo"): 5,
            ("b", "doing"): 0,
            ("c", "todo"): 0,  # c and d tie: the name decides
            ("c", "doing"): 2,
            (other, "todo"): 3,
            (other, "doing"): 0,
        },
        True,
    )
    # a queue really named like the overflow is summed with it, not "capped"
    assert metrics.queue_counts([(other, "todo", 1), ("a", "todo", 1)], limit=2) == (
        {(other, "todo"): 1, (other, "doing"): 0, ("a", "todo"): 1, ("a", "doing"): 0},
        False,
    )


def test_totals_keep_at_most_the_label_limit_pairs(caplog):
    totals = metrics.Totals(label_limit=2)
    for i in range(5):
        totals.finished(Finished(f"q{i}", "t", Outcome.SUCCEEDED, 0.1))
    totals.finished(Finished("q9", "t", Outcome.FAILED, None))  # never ran
    totals.job("q0", "t", "recovered")  # an admitted pair keeps its series
    totals.job("q8", "t", "recovered")
    totals.read_queue_depth([(f"q{i}", "todo", i) for i in range(4)])
    other = metrics.OTHER
    assert totals.jobs == {
        ("q0", "t", "succeeded"): 1,
        ("q1", "t", "succeeded"): 1,
        (other, other, "succeeded"): 3,
        (other, other, "failed"): 1,
        ("q0", "t", "recovered"): 1,
        (other, other, "recovered"): 1,
    }
    assert set(totals.durations) == {("q0", "t"), ("q1", "t"), (other, other)}
    assert totals.durations[(other, other)].count == 3  # the job that never ran: no
    assert totals.queue_jobs is not None
    assert {q for q, _ in totals.queue_jobs} == {"q3", "q2", other}
    events = [r for r in caplog.records if r.__dict__.get("action")]
    assert [(r.action, r.metric) for r in events] == [  # type: ignore[attr-defined]
        ("metrics_label_limit", "procrastinate_prefork_jobs_total"),
        ("metrics_label_limit", "procrastinate_prefork_queue_jobs"),
    ]


def fleet(**changes) -> FleetSnapshot:
    children = [
        ChildSnapshot(slot=0, pid=10, state="busy", heartbeat_age=0, rss_bytes=100),
        ChildSnapshot(slot=1, pid=11, state="draining", heartbeat_age=0),
    ]
    values: dict[str, Any] = {
        "host": "h",
        "pid": 1,
        "phase": "running",
        "concurrency": 3,
        "crash_looping": False,
        "database_up": True,
        "child_timeout": 60,
        "children": children,
    }
    return FleetSnapshot(**{**values, **changes})


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_per_child_series_carry_the_pool_with_several_pools():
    from procrastinate_prefork.fleet.snapshot import PoolSnapshot

    children = [
        ChildSnapshot(slot=0, pid=10, state="busy", heartbeat_age=0, pool="cpu"),
        ChildSnapshot(
            slot=1024, pid=11, state="idle", heartbeat_age=0, rss_bytes=7, pool="io"
        ),
    ]
    pools = (PoolSnapshot("cpu", ("cpu",), 2), PoolSnapshot("io", ("io",), 1))
    got = samples(
        metrics.render(fleet(children=children, pools=pools), metrics.Totals())
    )
    p = "procrastinate_prefork_"
    assert got[(p + "children", (("pool", "cpu"), ("state", "busy")))] == 1
    assert got[(p + "children", (("pool", "cpu"), ("state", "idle")))] == 0
    assert got[(p + "children", (("pool", "io"), ("state", "idle")))] == 1
    assert got[(p + "children_target", (("pool", "cpu"),))] == 2
    assert got[(p + "children_target", (("pool", "io"),))] == 1
    assert got[(p + "child_rss_bytes", (("pool", "io"), ("slot", "1024")))] == 7


def test_render_parses_back():
    totals = metrics.Totals()
    totals.finished(Finished("q", "slow", Outcome.SUCCEEDED, 2.0))
    totals.finished(Finished("q", "slow", Outcome.FAILED, 0.01))
    totals.job("q", "slow", "recovered")
    totals.exited("signal")
    totals.queue_jobs = {("q", "todo"): 4, ("q", "doing"): 1}
    got = samples(metrics.render(fleet(), totals))
    p = "procrastinate_prefork_"
    assert got[(p + "children", (("state", "busy"),))] == 1
    assert got[(p + "children", (("state", "retiring"),))] == 1
    assert got[(p + "children", (("state", "idle"),))] == 0
    assert got[(p + "children_target", ())] == 3
    assert got[(p + "child_rss_bytes", (("slot", "0"),))] == 100
    assert (p + "child_rss_bytes", (("slot", "1"),)) not in got
    assert got[(p + "database_up", ())] == 1
    assert got[(p + "child_exits_total", (("cause", "signal"),))] == 1
    job = (("outcome", "recovered"), ("queue", "q"), ("task", "slow"))
    assert got[(p + "jobs_total", job)] == 1
    labels = (("queue", "q"), ("task", "slow"))
    assert got[(p + "job_duration_seconds_count", labels)] == 2
    assert got[(p + "job_duration_seconds_bucket", (("le", "1.0"), *labels))] == 1
    assert got[(p + "queue_jobs", (("queue", "q"), ("status", "todo")))] == 4


def test_queue_jobs_absent_until_read():
    text = metrics.render(fleet(database_up=False), metrics.Totals())
    got = samples(text)
    assert got[("procrastinate_prefork_database_up", ())] == 0
    assert "procrastinate_prefork_queue_jobs" not in text


def test_metrics_route(monkeypatch):
    respond = probe.routes(fleet, lambda: "x 1\n")
    assert respond("/metrics") == (200, "x 1\n")
    monkeypatch.setattr(metrics, "available", lambda: False)
    status, body = respond("/metrics")
    assert status == 404 and "prometheus-client" in body
    assert probe.routes(fleet)("/metrics") is None  # no metrics source: unknown


def test_child_outcome_follows_procrastinate():
    import procrastinate
    from procrastinate import exceptions, job_context, testing

    from procrastinate_prefork.child.jobtracker import outcome_of as _outcome

    app = procrastinate.App(connector=testing.InMemoryConnector())

    @app.task(name="retrying", retry=procrastinate.RetryStrategy(max_attempts=2))
    def retrying() -> None: ...

    @app.task(name="plain")
    def plain() -> None: ...

    worker = types.SimpleNamespace(app=app)

    def context(task: str, reason: Any = None) -> Any:
        job = procrastinate.jobs.Job(
            id=1,
            queue="q",
            lock=None,
            queueing_lock=None,
            task_name=task,
            task_kwargs={},
            attempts=0,
        )
        return types.SimpleNamespace(job=job, abort_reason=lambda: reason)

    boom = RuntimeError("boom")
    aborted = exceptions.JobAborted()
    shutdown = job_context.AbortReason.SHUTDOWN
    assert _outcome(boom, context("plain"), worker) is Outcome.FAILED
    assert _outcome(boom, context("retrying"), worker) is Outcome.RETRIED
    user = job_context.AbortReason.USER_REQUEST
    assert _outcome(aborted, context("retrying", user), worker) is Outcome.ABORTED
    assert _outcome(aborted, context("retrying", shutdown), worker) is Outcome.RETRIED
    assert _outcome(aborted, context("plain", shutdown), worker) is Outcome.ABORTED
