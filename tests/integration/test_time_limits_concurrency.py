"""Time limits with several jobs per child (``--child-concurrency`` > 1): each
running job is tracked and limited on its own, the job over its limit is the
one blamed, and the others of its child are recovered without counting a
crash against them. The fleet table lists every running job of a child."""

from __future__ import annotations

import psycopg

from ..fleet_helper import defer, jobs, wait_for


def _status(db_url, job_id):
    return jobs(db_url, [job_id])[0]["status"]


def test_the_job_over_its_limit_is_blamed_not_the_newest(fleet, db_url):
    fleet.start(
        "--concurrency",
        "1",
        "--child-concurrency",
        "2",
        "--job-timeout",
        "4",
        "--task-timeout",
        "async_sleep=60",
    )
    [long] = defer(db_url, "sleep", seconds=12)
    fleet.running_child(long)
    # newer, within its own limit, and still running when the long one passes
    # its limit (4 s) and when their child is killed 2 s later
    [newer] = defer(db_url, "async_sleep", seconds=9)
    fleet.running_child(newer)
    wait_for(
        lambda: _status(db_url, long) == "failed",
        timeout=30,
        message="the long job to fail on its time limit",
    )
    assert [e["job_id"] for e in fleet.events("time_limit")] == [long]
    wait_for(
        lambda: _status(db_url, newer) == "succeeded",
        timeout=30,
        message="the newer job to run again and succeed",
    )
    # the newer job was interrupted (not blamed) and ran again: the long one
    # did not
    starts = [(j, a) for j, a, _ in fleet.marks("start")]
    assert sorted(starts) == [(long, 0), (newer, 0), (newer, 1)]
    assert fleet.stop(timeout=60) is not None


def test_per_task_limit_beside_newer_jobs_and_others_not_counted(fleet, db_url):
    fleet.start(
        "--concurrency", "1", "--child-concurrency", "2", "--task-timeout", "sleep=2"
    )
    [limited] = defer(db_url, "sleep", seconds=30)
    fleet.running_child(limited)
    [bystander] = defer(db_url, "async_sleep", seconds=20)  # no limit, newer
    fleet.running_child(bystander)
    wait_for(
        lambda: _status(db_url, limited) == "failed",
        timeout=30,
        message="the limited job to fail on its time limit",
    )
    assert [e["job_id"] for e in fleet.events("time_limit")] == [limited]
    wait_for(lambda: fleet.events("job_recovered"), message="the bystander's recovery")
    by_job = {e["job_id"]: e for e in fleet.events("job_recovered")}
    assert by_job[limited]["recovery_action"] == "failed"
    assert by_job[bystander]["recovery_action"] == "retried"
    assert by_job[bystander]["crashes"] == 0  # not counted against it
    wait_for(
        lambda: (bystander, 1) in [(j, a) for j, a, _ in fleet.marks("start")],
        timeout=20,
        message="the bystander to run again",
    )
    assert fleet.stop(timeout=60) is not None


def test_fleet_table_lists_every_running_job_of_a_child(fleet, db_url):
    fleet.start(
        "--concurrency", "1", "--child-concurrency", "2", "--heartbeat-interval", "0.5"
    )
    [first] = defer(db_url, "sleep", seconds=6)
    fleet.running_child(first)
    [second] = defer(db_url, "sleep", seconds=6)
    fleet.running_child(second)

    def child_row():
        with psycopg.connect(db_url, autocommit=True) as conn:
            return conn.execute(
                "SELECT job_id, job_ids FROM procrastinate_prefork_processes "
                "WHERE kind = 'child' AND state <> 'stopped'"
            ).fetchone()

    row = wait_for(
        lambda: (r := child_row()) and r[1] and len(r[1]) == 2 and r,
        message="both jobs in the child's row",
    )
    assert row == (first, [first, second])  # job_id: the oldest running job
    wait_for(
        lambda: _status(db_url, second) == "succeeded",
        timeout=30,
        message="both jobs to end",
    )
    wait_for(lambda: child_row() == (None, []), message="the row to show no job")
    assert fleet.stop(timeout=60) == 0
