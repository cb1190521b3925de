"""/metrics on the probe port of a real fleet, parsed with prometheus-client's
own parser: counts match the jobs run, a SIGKILLed child's job is counted
``recovered``, counters survive the child's replacement."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import sys
from collections.abc import Callable

import psutil
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from procrastinate_prefork.child import jobring
from procrastinate_prefork.observability import metrics

from ..fleet_helper import Fleet, defer, jobs, status_counts, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        kind = response.getheader("Content-Type") or ""
        return response.status, kind, response.read().decode()
    finally:
        conn.close()


def scrape(port: int) -> Samples:
    status, kind, text = get(port, "/metrics")
    assert status == 200 and kind.startswith("text/plain"), (status, text)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape_until(port: int, done: Callable[[Samples], object], what: str) -> Samples:
    def attempt() -> Samples | None:
        samples = scrape(port)
        return samples if done(samples) else None

    return wait_for(attempt, message=what)


def jobs_total(samples: Samples, task: str, outcome: str) -> float:
    labels = (("outcome", outcome), ("queue", "default"), ("task", task))
    return samples.get(("procrastinate_prefork_jobs_total", labels), 0.0)


def test_metrics_count_jobs_recoveries_and_survive_replacement(
    fleet: Fleet, db_url: str
) -> None:
    port = free_port()
    fleet.start(
        "--concurrency", "2", "--health-port", str(port), "--heartbeat-interval", "0.5"
    )
    defer(db_url, "noop", count=5)
    defer(db_url, "first_run_fails", first=0)
    defer(db_url, "flaky", fail_times=1)  # retried once, then succeeds
    wait_for(
        lambda: status_counts(db_url) == {"succeeded": 6, "failed": 1},
        message="7 jobs done",
    )
    before = scrape_until(
        port,
        lambda s: (
            jobs_total(s, "first_run_fails", "failed")
            and jobs_total(s, "flaky", "succeeded")
            and jobs_total(s, "noop", "succeeded") == 5
        ),
        "the jobs in the metrics",
    )
    assert jobs_total(before, "first_run_fails", "failed") == 1
    assert jobs_total(before, "flaky", "retried") == 1
    assert jobs_total(before, "flaky", "succeeded") == 1
    ended = [
        v
        for (name, _), v in before.items()
        if name == "procrastinate_prefork_jobs_total"
    ]
    assert sum(ended) == 8  # 7 jobs, one of them run twice
    labels = (("queue", "default"), ("task", "noop"))
    assert before[("procrastinate_prefork_job_duration_seconds_count", labels)] == 5
    assert before[("procrastinate_prefork_children_target", ())] == 2
    assert before[("procrastinate_prefork_database_up", ())] == 1
    assert before[("procrastinate_prefork_children", (("state", "idle"),))] == 2
    for slot in ("0", "1"):
        assert before[("procrastinate_prefork_child_rss_bytes", (("slot", slot),))] > 0

    # A SIGKILLed child: its job is recovered (then succeeds), its exit
    # counted, and the totals of the jobs it ran stay.
    [job_id] = defer(db_url, "sleep", seconds=8)
    pid = fleet.running_child(job_id)
    os.kill(pid, signal.SIGKILL)
    after = scrape_until(
        port,
        lambda s: jobs_total(s, "sleep", "recovered"),
        "the recovery in the metrics",
    )
    assert jobs_total(after, "sleep", "recovered") == 1
    exits = ("procrastinate_prefork_child_exits_total", (("cause", "signal"),))
    assert after[exits] == 1
    for (name, labels), value in before.items():
        if name.endswith(("_total", "_count")):
            assert after.get((name, labels), 0) >= value, (name, labels)
    fleet.wait_children(2, exclude=[pid])
    doing = (
        "procrastinate_prefork_queue_jobs",
        (("queue", "default"), ("status", "doing")),
    )
    scrape_until(
        port, lambda s: s.get(doing) == 1, "the queue depth read by the supervisor"
    )


def succeeded(db_url: str) -> int:
    return status_counts(db_url).get("succeeded", 0)


LOST = ("procrastinate_prefork_job_records_lost_total", ())


def ended(samples: Samples) -> float:
    return sum(series(samples, "procrastinate_prefork_jobs_total").values())


def accounted_for(port: int, jobs: int) -> Samples:
    """The metrics once each of ``jobs`` is counted, or counted lost."""
    return scrape_until(
        port,
        lambda s: ended(s) + s[LOST] >= jobs,
        f"{jobs} jobs' records read by the supervisor",
    )


def test_burst_past_the_ring_while_the_supervisor_is_stopped_loses_no_job(
    fleet: Fleet, db_url: str
) -> None:
    """A child finishes many more jobs than its ring holds while its
    supervisor cannot read (SIGSTOPped), once in the middle of a burst and
    once until the burst's end (its last jobs then reach the supervisor with
    no job ending after them): each job is still counted once."""
    port = free_port()
    fleet.start("--concurrency", "1", "--health-port", str(port))
    burst = 3000
    defer(db_url, "noop", count=burst)

    def stopped_until(enough: int) -> None:
        os.kill(fleet.pid, signal.SIGSTOP)
        try:
            wait_for(
                lambda: succeeded(db_url) >= enough,
                timeout=120,
                message=f"{enough} jobs done, the supervisor stopped",
            )
        finally:
            os.kill(fleet.pid, signal.SIGCONT)

    wait_for(lambda: succeeded(db_url) >= 200, timeout=60, message="the burst on")
    stopped_until(succeeded(db_url) + 3 * jobring.RING)
    wait_for(lambda: succeeded(db_url) >= burst // 2, timeout=120)
    stopped_until(burst)
    samples = accounted_for(port, burst)
    assert (ended(samples), samples[LOST]) == (burst, 0)
    assert jobs_total(samples, "noop", "succeeded") == burst
    labels = (("queue", "default"), ("task", "noop"))
    count = ("procrastinate_prefork_job_duration_seconds_count", labels)
    assert samples[count] == burst


def recycle_while_stopped(
    fleet: Fleet, db_url: str, port: int, exited: bool
) -> Samples:
    """A child recycles (after 500 jobs) while its supervisor is stopped and
    its ring full; the supervisor resumes as soon as the child's last job is
    done, or only once the child has ``exited``."""
    fleet.start(
        "--concurrency", "1", "--health-port", str(port),
        "--max-jobs-per-child", "500", "--max-jobs-jitter", "0",
    )  # fmt: skip
    defer(db_url, "noop", count=1000)
    wait_for(lambda: succeeded(db_url) >= 100, timeout=60, message="jobs done")
    [child] = fleet.child_pids()
    os.kill(fleet.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: succeeded(db_url) >= 500, timeout=60, message="500 done")
        if exited:
            wait_for(
                lambda: psutil.Process(child).status() == psutil.STATUS_ZOMBIE,
                message="the recycled child's exit",
            )
    finally:
        os.kill(fleet.pid, signal.SIGCONT)
    wait_for(lambda: succeeded(db_url) == 1000, timeout=120, message="1000 done")
    return accounted_for(port, 1000)


def test_recycled_child_hands_its_held_jobs_over_before_exiting(
    fleet: Fleet, db_url: str
) -> None:
    samples = recycle_while_stopped(fleet, db_url, free_port(), exited=False)
    assert (ended(samples), samples[LOST]) == (1000, 0)
    assert not fleet.events("job_records_lost")


def test_child_exited_holding_jobs_has_them_counted_lost(
    fleet: Fleet, db_url: str
) -> None:
    """Its supervisor stopped past the child's wait: what the child held is
    gone with it, and counted as lost, never silently missing."""
    samples = recycle_while_stopped(fleet, db_url, free_port(), exited=True)
    lost = samples[LOST]
    assert lost > 0
    assert ended(samples) + lost == 1000
    assert sum(e["jobs"] for e in fleet.events("job_records_lost")) == lost


def test_metrics_404_without_prometheus_client(fleet: Fleet) -> None:
    port = free_port()
    hide = (
        "import sys; sys.modules['prometheus_client'] = None; "
        "from procrastinate_prefork.cli import main; sys.exit(main())"
    )
    fleet.start(
        command=[
            sys.executable,
            "-c",
            hide,
            "--app",
            "tests.apps.plain_app.app",
            "worker",
            "--concurrency",
            "1",
            "--health-port",
            str(port),
        ]
    )
    status, _, text = get(port, "/metrics")
    assert status == 404
    assert "prometheus-client" in text and text.count("\n") == 1
    assert get(port, "/live")[0] == 200


def test_time_limit_counted_by_the_supervisor(fleet: Fleet, db_url: str) -> None:
    port = free_port()
    fleet.start("--concurrency", "1", "--health-port", str(port), "--job-timeout", "1")
    [job_id] = defer(db_url, "sleep", seconds=60)
    fleet.running_child(job_id)
    samples = scrape_until(
        port, lambda s: jobs_total(s, "sleep", "failed"), "the job over its limit"
    )
    assert jobs_total(samples, "sleep", "failed") == 1
    cause = ("procrastinate_prefork_child_exits_total", (("cause", "time_limit"),))
    assert samples[cause] == 1
    assert not jobs_total(samples, "sleep", "recovered")
    assert jobs(db_url, [job_id])[0]["status"] == "failed"


def defer_to_queues(db_url: str, task: str, queues: list[str], later: bool) -> None:
    """One job of ``task`` per queue, as procrastinate's defer does; ``later``:
    scheduled in an hour (waiting ``todo``, never fetched meanwhile)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "SELECT procrastinate_defer_jobs_v1(array_agg(ROW("
            "  q, %s, 0, NULL, NULL, '{}'::jsonb,"
            "  CASE WHEN %s THEN now() + interval '1 hour' END"
            ")::procrastinate_job_to_defer_v1)) FROM unnest(%s::text[]) AS q",
            [task, later, queues],
        )


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def test_series_stay_within_the_label_limit(fleet: Fleet, db_url: str) -> None:
    """Queue names are the deferrer's choice: past --metrics-label-limit they
    are counted under one label value, logged once, for the jobs counted and
    the queue depth alike."""
    port = free_port()
    fleet.start(
        "--concurrency", "1", "--health-port", str(port), "--heartbeat-interval",
        "0.5", "--metrics-label-limit", "3",
    )  # fmt: skip
    defer_to_queues(db_url, "noop", [f"run{i}" for i in range(8)], later=False)
    defer_to_queues(db_url, "noop", [f"wait{i}" for i in range(6)], later=True)
    wait_for(lambda: status_counts(db_url) == {"succeeded": 8, "todo": 6})
    p = "procrastinate_prefork_"

    def counted(jobs_ended: int, waiting: int) -> Callable[[Samples], bool]:
        return lambda s: (
            sum(series(s, p + "jobs_total").values()) == jobs_ended
            and sum(series(s, p + "queue_jobs").values()) == waiting
        )

    got = scrape_until(port, counted(8, 6), "the jobs and the queue depth")
    other = (
        ("outcome", "succeeded"),
        ("queue", metrics.OTHER),
        ("task", metrics.OTHER),
    )
    jobs_series = series(got, p + "jobs_total")
    assert len(jobs_series) == 3 + 1 and jobs_series[other] == 5
    assert len(series(got, p + "job_duration_seconds_count")) == 3 + 1
    depth = series(got, p + "queue_jobs")
    assert len(depth) == (3 + 1) * 2  # todo and doing per queue
    assert depth[(("queue", metrics.OTHER), ("status", "todo"))] == 3

    # more names past the limit: the same series, counted, no new log event
    defer_to_queues(db_url, "noop", ["run8", "run9"], later=False)
    defer_to_queues(db_url, "noop", ["wait6"], later=True)
    got = scrape_until(port, counted(10, 7), "the later jobs")
    assert len(series(got, p + "jobs_total")) == 3 + 1
    assert series(got, p + "jobs_total")[other] == 7
    assert len(series(got, p + "queue_jobs")) == (3 + 1) * 2
    events = fleet.events("metrics_label_limit")
    assert sorted(e["metric"] for e in events) == [
        p + "jobs_total",
        p + "queue_jobs",
    ], events
    assert all(e["limit"] == 3 for e in events)


def test_jobs_of_an_unknown_task_are_counted_failed_once(
    fleet: Fleet, db_url: str
) -> None:
    """procrastinate fails them before any middleware runs: counted when it
    records their end, not in the duration histogram (they never ran)."""
    port = free_port()
    fleet.start("--concurrency", "1", "--health-port", str(port))
    [unknown] = defer(db_url, "no_such_task")
    wait_for(lambda: jobs(db_url, [unknown])[0]["status"] == "failed")
    defer(db_url, "noop")  # run after it: its count proves the ring was read
    got = scrape_until(
        port,
        lambda s: jobs_total(s, "noop", "succeeded") == 1,
        "the job run after the unknown task's",
    )
    assert jobs_total(got, "no_such_task", "failed") == 1
    ended = series(got, "procrastinate_prefork_jobs_total")
    assert sum(ended.values()) == 2
    durations = series(got, "procrastinate_prefork_job_duration_seconds_count")
    assert list(durations) == [(("queue", "default"), ("task", "noop"))]
