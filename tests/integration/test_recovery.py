"""Stalled-job recovery with real processes: kill -9, os._exit, SIGSTOP,
time limits, a supervisor killed whole, and no false recovery.

The fleets in these tests poll for jobs only every 30 s (fleet_helper), so a
job that runs again within a few seconds was woken by the recovery itself.
"""

from __future__ import annotations

import os
import signal
import time

import psycopg

from ..fleet_helper import defer, jobs, status_counts, wait_for

FAST_SWEEP = ("--stalled-timeout", "3", "--heartbeat-interval", "0.5")


def _attempt_starts(fleet, job_id):
    return sorted(a for j, a, _ in fleet.marks("start") if j == job_id)


def test_sigkill_mid_job_runs_again_on_another_child(fleet, db_url):
    fleet.start("--concurrency", "2")
    [job_id] = defer(db_url, "sleep", seconds=1.0)
    victim = fleet.running_child(job_id)
    killed_at = time.time()
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: jobs(db_url, [job_id])[0]["status"] == "succeeded",
        timeout=20,
        message="the job to succeed after the kill",
    )
    [row] = jobs(db_url, [job_id])
    assert row["attempts"] >= 1  # the crash counted as an attempt
    runs = {(a, pid) for j, a, pid in fleet.marks("start") if j == job_id}
    assert (0, victim) in runs
    retried = [(a, pid) for a, pid in runs if a == 1]
    assert retried and retried[0][1] != victim
    restarted_after = fleet.mark_times("start")[(job_id, 1)] - killed_at
    # runnable at once and started without waiting for the 30 s poll
    assert restarted_after < 10, restarted_after
    assert job_id in [e["job_id"] for e in fleet.events("job_recovered")]
    assert fleet.stop() == 0


def test_poison_pill_fails_after_cap_while_others_flow(fleet, db_url):
    fleet.start("--concurrency", "2", "--max-crash-retries", "2")
    [poison] = defer(db_url, "die", code=13)
    others = defer(db_url, "cpu", count=30, ms=20)
    wait_for(
        lambda: jobs(db_url, [poison])[0]["status"] == "failed",
        timeout=60,
        message="the poison job to fail",
    )
    wait_for(
        lambda: all(r["status"] == "succeeded" for r in jobs(db_url, others)),
        timeout=60,
        message="the other jobs to succeed",
    )
    # ran once, then retried twice (the cap), then failed: 3 starts in all
    assert _attempt_starts(fleet, poison) == [0, 1, 2]
    assert 13 in [e["exit_code"] for e in fleet.events("child_exited")]
    [failed] = [
        e
        for e in fleet.events("job_recovered")
        if e["job_id"] == poison and e["recovery_action"] == "failed"
    ]
    assert failed["crashes"] == 3  # past the cap of 2: a poison pill
    assert fleet.events("crash_loop") == []
    with psycopg.connect(db_url) as conn:
        crashes = conn.execute(
            "SELECT crashes FROM procrastinate_prefork_job_crashes WHERE job_id = %s",
            [poison],
        ).fetchone()
    assert crashes == (3,)
    assert fleet.stop() == 0


def test_whole_supervisor_killed_another_host_recovers_after_timeout(
    fleet_factory, db_url
):
    first = fleet_factory.new("host-a")
    first.start("--concurrency", "1", "--hostname", "host-a", *FAST_SWEEP)
    [job_id] = defer(db_url, "sleep", seconds=60)
    wait_for(lambda: first.marks("start"), message="the job to start on host a")
    first.kill_all()  # supervisor and child, as if the host died
    killed_at = time.time()
    assert jobs(db_url, [job_id])[0]["status"] == "doing"

    second = fleet_factory.new("host-b")
    second.start("--concurrency", "1", "--hostname", "host-b", *FAST_SWEEP)
    wait_for(
        lambda: second.marks("start"),
        timeout=30,
        message="the sweep to recover the job and host b to run it",
    )
    # not before the stalled timeout (3 s, minus up to one 0.5 s heartbeat)
    assert second.mark_times("start")[(job_id, 1)] - killed_at >= 2.4
    # by a sweep: no child of this fleet died under it
    assert [(e["job_id"], e["child_pid"]) for e in second.events("job_recovered")] == [
        (job_id, None)
    ]
    second.stop(timeout=5)


def test_restarted_supervisor_recovers_predecessor_at_once(fleet_factory, db_url):
    first = fleet_factory.new("first")
    first.start("--concurrency", "1", "--hostname", "same-host")
    [job_id] = defer(db_url, "sleep", seconds=60)
    wait_for(lambda: first.marks("start"), message="the job to start")
    first.kill_all()

    second = fleet_factory.new("second")
    # a stalled timeout of 10 minutes: only the predecessor rule can recover it
    second.start(
        "--concurrency", "1", "--hostname", "same-host", "--stalled-timeout", "600"
    )
    wait_for(
        lambda: second.marks("start"),
        timeout=10,
        message="the predecessor's job to run again",
    )
    assert [e["jobs"] for e in second.events("predecessor_recovered")] == [1]
    assert jobs(db_url, [job_id])[0]["attempts"] == 1
    second.stop(timeout=5)


def test_long_job_on_healthy_child_is_never_recovered(fleet_factory, db_url):
    runner = fleet_factory.new("runner")
    runner.start(
        "--concurrency",
        "1",
        "--hostname",
        "runner",
        *FAST_SWEEP,
        "--shutdown-graceful-timeout",
        "30",
    )
    sweeper = fleet_factory.new("sweeper")
    sweeper.start("--concurrency", "1", "--hostname", "sweeper", *FAST_SWEEP)
    [job_id] = defer(db_url, "sleep", seconds=8)
    wait_for(
        lambda: runner.marks("start") or sweeper.marks("start"),
        message="the job to start",
    )
    owner = runner if runner.marks("start") else sweeper
    other = sweeper if owner is runner else runner
    time.sleep(4)  # longer than the stalled timeout, while running
    owner.signal(signal.SIGTERM)  # and drain through the rest of it
    assert owner.wait(timeout=30) == 0, owner.log()
    [row] = jobs(db_url, [job_id])
    assert row["status"] == "succeeded"
    assert row["attempts"] == 1  # procrastinate counts the successful run
    all_starts = owner.marks("start") + other.marks("start")
    assert [(j, a) for j, a, _ in all_starts] == [(job_id, 0)]
    assert owner.events("job_recovered") + other.events("job_recovered") == []
    other.stop(timeout=10)


def test_job_timeout_fails_job_and_replaces_child(fleet, db_url):
    fleet.start("--concurrency", "1", "--job-timeout", "1")
    [job_id] = defer(db_url, "sleep", seconds=30)
    victim = fleet.running_child(job_id)
    wait_for(
        lambda: jobs(db_url, [job_id])[0]["status"] == "failed",
        timeout=20,
        message="the job to fail on its time limit",
    )
    new = fleet.wait_children(1, exclude=[victim])
    assert new and victim not in new
    assert [e["job_id"] for e in fleet.events("time_limit")] == [job_id]
    assert [
        (e["job_id"], e["recovery_action"]) for e in fleet.events("job_recovered")
    ] == [(job_id, "failed")]
    # the fleet still works
    [after] = defer(db_url, "cpu", ms=1)
    wait_for(
        lambda: jobs(db_url, [after])[0]["status"] == "succeeded",
        timeout=20,
        message="a job after the replacement",
    )
    assert fleet.stop() == 0


def test_per_task_timeout_retries_when_the_strategy_says_so(fleet, db_url):
    fleet.start("--concurrency", "1", "--task-timeout", "slow_retry_on_timeout=1")
    [job_id] = defer(db_url, "slow_retry_on_timeout", seconds=30)
    wait_for(
        lambda: jobs(db_url, [job_id])[0]["status"] == "failed",
        timeout=40,
        message="the job to exhaust its retries",
    )
    # RetryStrategy(max_attempts=2) retries while attempts < 2, as it would
    # for any exception under stock procrastinate: three runs in all
    assert _attempt_starts(fleet, job_id) == [0, 1, 2]
    assert {e["job_id"] for e in fleet.events("time_limit")} == {job_id}
    assert [
        e["recovery_action"]
        for e in fleet.events("job_recovered")
        if e["job_id"] == job_id
    ] == ["retried", "retried", "failed"]
    assert fleet.stop() == 0


def test_sigstopped_child_is_detected_killed_and_replaced(fleet, db_url):
    fleet.start("--concurrency", "2", "--child-timeout", "2")
    [job_id] = defer(db_url, "sleep", seconds=1.0)
    victim = fleet.running_child(job_id)
    os.kill(victim, signal.SIGSTOP)
    wait_for(
        lambda: fleet.events("child_wedged"), timeout=15, message="wedge detection"
    )
    wait_for(
        lambda: jobs(db_url, [job_id])[0]["status"] == "succeeded",
        timeout=20,
        message="the job to run again elsewhere",
    )
    fleet.wait_children(2, exclude=[victim])
    assert any(
        a == 1 and pid != victim for j, a, pid in fleet.marks("start") if j == job_id
    )
    assert fleet.stop() == 0


def test_abort_requested_job_of_dead_child_ends_aborted(fleet, db_url):
    fleet.start("--concurrency", "1")
    [job_id] = defer(db_url, "sleep", seconds=30)
    victim = fleet.running_child(job_id)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT procrastinate_cancel_job_v1(%s, true, false)", [job_id])
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: jobs(db_url, [job_id])[0]["status"] == "aborted",
        timeout=15,
        message="the job to end aborted",
    )
    assert _attempt_starts(fleet, job_id) == [0]
    assert fleet.stop() == 0


def test_clean_stop_leaves_no_live_looking_rows(fleet, db_url):
    fleet.start("--concurrency", "2")
    fleet.wait_children(2)
    with psycopg.connect(db_url, autocommit=True) as conn:
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM procrastinate_prefork_processes "
                    "WHERE kind = 'child' AND worker_id IS NOT NULL"
                ).fetchone()[0]
                == 2
            ),
            message="the children's worker ids in the fleet table",
        )
    assert fleet.stop() == 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        states = conn.execute(
            "SELECT DISTINCT state FROM procrastinate_prefork_processes"
        ).fetchall()
        workers = conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
    assert states == [("stopped",)]
    assert workers == (0,)
    assert status_counts(db_url).get("doing", 0) == 0


def test_job_of_a_child_never_recorded_by_its_supervisor_is_recovered(
    fleet_factory, db_url
):
    """The supervisor is SIGKILLed, with its children, before any heartbeat
    of its wrote a new child's worker id (here its heartbeats wait on a lock
    on its row), while that child runs a job. The child wrote its worker id
    in its row itself before its first fetch: the successor on the host
    recovers the job at its start. Without that the worker would pass for a
    stock worker, its job doing for --stock-worker-timeout."""
    first = fleet_factory.new()
    first.start("--concurrency", "1")
    [old_child] = first.wait_children(1)
    with psycopg.connect(db_url) as holder:
        holder.execute(
            "SELECT 1 FROM procrastinate_prefork_processes WHERE kind = "
            "'supervisor' AND pid = %s FOR NO KEY UPDATE",
            [first.pid],
        )
        os.kill(old_child, signal.SIGKILL)
        first.wait_children(1, exclude=[old_child])
        [job_id] = defer(db_url, "sleep", seconds=5)
        first.running_child(job_id)
        first.kill_all()
    second = fleet_factory.new()
    second.start("--concurrency", "1")
    second.running_child(job_id, attempt=1, timeout=20)
    [event] = second.events("predecessor_recovered")
    assert event["jobs"] == 1
    assert second.stop() == 0
