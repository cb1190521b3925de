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

from prometheus_client.parser import text_string_to_metric_families

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
