"""Each job is recovered on its own: one job that cannot be recovered (a
queueing-lock conflict, an error) never holds back the recovery of others,
neither after a child's death, nor in a sweep, nor in the queue of pending
recoveries of the supervisor.

The fleets poll for jobs only every 30 s (fleet_helper)."""

from __future__ import annotations

import json
import os
import signal

import psycopg

from ..fleet_helper import jobs, wait_for

FAST_SWEEP = ("--stalled-timeout", "3", "--heartbeat-interval", "0.5")


def _defer_locked(db_url, task, lock, queueing_lock, **kwargs):
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW('default', %s, 0, %s, %s, "
            "%s::jsonb, NULL)::procrastinate_job_to_defer_v1])",
            [task, lock, queueing_lock, json.dumps(kwargs)],
        ).fetchone()
    return row[0][0]


def _status(db_url, job_id):
    return jobs(db_url, [job_id])[0]["status"]


def _start_conflict(fleet, db_url):
    """A locked job and a free one running on one child, and a second job of
    the same lock and queueing lock waiting (allowed while the first is
    ``doing``). Returns (locked, free, waiting) job ids."""
    locked = _defer_locked(db_url, "sleep", "L", "Q", seconds=30)
    free = _defer_locked(db_url, "sleep", None, None, seconds=30)
    fleet.running_child(locked)
    fleet.running_child(free)
    waiting = _defer_locked(db_url, "sleep", "L", "Q", seconds=1)
    return locked, free, waiting


def _assert_conflict_outcome(fleet, db_url, locked, free, waiting, recoverer):
    wait_for(
        lambda: _status(db_url, locked) == "failed",
        timeout=30,
        message="the conflicting job to fail",
    )
    wait_for(
        lambda: _status(db_url, waiting) == "succeeded",
        timeout=30,
        message="the waiting job of the same lock to run",
    )
    wait_for(
        lambda: (
            _status(db_url, free) == "todo"
            or (
                recoverer.marks("start")
                and any(j == free for j, _, _ in recoverer.marks("start"))
            )
        ),
        timeout=30,
        message="the other job to be recovered",
    )
    [conflict] = [
        e for e in recoverer.events("job_recovery_conflict") if e["job_id"] == locked
    ]
    assert conflict["conflict_job_id"] == waiting
    assert conflict["recovery_action"] == "failed"
    retried = [e for e in recoverer.events("job_recovered") if e["job_id"] == free]
    assert [e["recovery_action"] for e in retried] == ["retried"]


def test_queueing_lock_conflict_after_child_death(fleet, db_url):
    fleet.start("--concurrency", "1", "--child-concurrency", "2", *FAST_SWEEP)
    locked, free, waiting = _start_conflict(fleet, db_url)
    victim = fleet.running_child(locked)
    os.kill(victim, signal.SIGKILL)
    _assert_conflict_outcome(fleet, db_url, locked, free, waiting, fleet)
    # the free job ran again, woken by the recovery
    wait_for(
        lambda: any((j, a) == (free, 1) for j, a, _ in fleet.marks("start")),
        timeout=20,
        message="the recovered job to run again",
    )
    assert fleet.stop(timeout=60) is not None


def test_queueing_lock_conflict_in_a_sweep(fleet_factory, db_url):
    first = fleet_factory.new("host-a")
    first.start(
        "--concurrency",
        "1",
        "--child-concurrency",
        "2",
        "--hostname",
        "host-a",
        *FAST_SWEEP,
    )
    locked, free, waiting = _start_conflict(first, db_url)
    first.kill_all()  # the whole host dies: only a sweep can recover
    second = fleet_factory.new("host-b")
    second.start("--concurrency", "2", "--hostname", "host-b", *FAST_SWEEP)
    _assert_conflict_outcome(second, db_url, locked, free, waiting, second)
    second.stop(timeout=60)


def test_failing_recovery_does_not_hold_back_the_next(fleet, db_url):
    fleet.start("--concurrency", "2", *FAST_SWEEP)
    stuck, other = (
        _defer_locked(db_url, "sleep", None, None, seconds=30) for _ in range(2)
    )
    stuck_pid = fleet.running_child(stuck)
    other_pid = fleet.running_child(other)
    with psycopg.connect(db_url, autocommit=True) as conn:
        [worker_id] = conn.execute(
            "SELECT worker_id FROM procrastinate_jobs WHERE id = %s", [stuck]
        ).fetchone()
        # stands in for any error that keeps one recovery failing
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN IF OLD.id = {int(worker_id)} THEN RAISE 'refused'; END IF; "
            "RETURN OLD; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse BEFORE DELETE ON procrastinate_workers "
            "FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    os.kill(stuck_pid, signal.SIGKILL)
    wait_for(
        lambda: fleet.events("db_error") or fleet.events("job_recovery_failed"),
        message="the first recovery to fail",
    )
    os.kill(other_pid, signal.SIGKILL)
    wait_for(
        lambda: any((j, a) == (other, 1) for j, a, _ in fleet.marks("start")),
        timeout=20,
        message="the second dead child's job to run again",
    )
    assert fleet.stop(timeout=60) is not None
