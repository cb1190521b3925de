"""Soft time limits: past it, the task sees SoftTimeLimitExceeded and may clean
up; its child lives on and takes the next job; the hard limit stays."""

from __future__ import annotations

import pytest

from ..fleet_helper import defer, jobs, wait_for

SOFT, HARD = 1.0, 15.0


def _status(db_url, job_id):
    return jobs(db_url, [job_id])[0]["status"]


def _ended(db_url, job_id):
    return _status(db_url, job_id) in ("succeeded", "failed")


@pytest.mark.parametrize("task", ["soft_loop", "soft_async"])
def test_task_stopped_at_its_soft_limit_and_child_lives_on(fleet, db_url, task):
    fleet.start(
        "--concurrency",
        "1",
        "--task-soft-timeout",
        f"{task}={SOFT}",
        "--job-timeout",
        str(HARD),
    )
    [job] = defer(db_url, task, seconds=60)
    pid = fleet.running_child(job)
    wait_for(
        lambda: _ended(db_url, job),
        timeout=HARD,
        message="the job to end before its hard limit",
    )
    assert _status(db_url, job) == "failed"
    assert [(j, a) for j, a, _ in fleet.marks("soft")] == [(job, 0)]  # cleanup ran
    assert not fleet.marks("cancelled") and not fleet.marks("end")
    started = fleet.mark_times("start")[(job, 0)]
    stopped = fleet.mark_times("soft")[(job, 0)]
    assert SOFT <= stopped - started < HARD
    [event] = fleet.events("soft_time_limit")
    assert (event["job_id"], event["task_name"], event["pid"]) == (job, task, pid)
    assert not fleet.events("time_limit") and not fleet.events("child_exited")
    [next_job] = defer(db_url, "cpu", ms=1)
    wait_for(
        lambda: _status(db_url, next_job) == "succeeded", message="the next job to run"
    )
    assert [p for j, _, p in fleet.marks("end") if j == next_job] == [pid]
    assert fleet.child_pids() == [pid]
    assert fleet.stop(timeout=60) == 0


def test_only_the_late_job_of_a_child_is_interrupted(fleet, db_url):
    fleet.start(
        "--concurrency",
        "1",
        "--child-concurrency",
        "2",
        "--task-soft-timeout",
        "soft_loop=3",
        "--job-timeout",
        str(HARD),
    )
    [late] = defer(db_url, "soft_loop", seconds=60)
    pid = fleet.running_child(late)
    # a sync job in a thread of its own, without a soft limit, still running
    # when the late job's fires
    [bystander] = defer(db_url, "sleep", seconds=6)
    assert fleet.running_child(bystander) == pid
    wait_for(
        lambda: _ended(db_url, late) and _ended(db_url, bystander),
        timeout=HARD,
        message="both jobs to end",
    )
    assert _status(db_url, late) == "failed"
    assert _status(db_url, bystander) == "succeeded"
    assert [e["job_id"] for e in fleet.events("soft_time_limit")] == [late]
    assert [j for j, _, _ in fleet.marks("soft")] == [late]
    # the two jobs overlapped when the limit fired
    assert fleet.mark_times("end")[(bystander, 0)] > fleet.mark_times("soft")[(late, 0)]
    assert fleet.child_pids() == [pid]
    assert fleet.stop(timeout=60) == 0


def test_retried_when_its_retry_strategy_lists_the_exception(fleet, db_url):
    fleet.start(
        "--concurrency",
        "1",
        "--task-soft-timeout",
        "soft_retry=1",
        "--job-timeout",
        str(HARD),
    )
    [job] = defer(db_url, "soft_retry", seconds=60)
    pid = fleet.running_child(job)
    wait_for(
        lambda: (job, 1) in fleet.mark_times("start"),
        timeout=HARD,
        message="the job to run again",
    )
    wait_for(
        lambda: _status(db_url, job) == "failed",
        timeout=HARD,
        message="the second run to fail (one retry only)",
    )
    assert jobs(db_url, [job])[0]["attempts"] == 2
    assert len(fleet.events("soft_time_limit")) == 2
    assert fleet.child_pids() == [pid] and not fleet.events("time_limit")
    assert fleet.stop(timeout=60) == 0
