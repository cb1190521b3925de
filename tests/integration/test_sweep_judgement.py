"""How the leaderless sweep judges that a worker is dead, with real fleets,
a real stock ``procrastinate worker`` and a real PostgreSQL (locks, restarts).

None of these jobs may run twice: each test checks the start markers (one
run), the job's final row and that no sweep logged a recovery.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

import psycopg
import pytest

from ..chaos_driver import pg_ctl, throwaway_pg
from ..fleet_helper import APP, defer, jobs, wait_for

SHORT = ("--stalled-timeout", "2", "--heartbeat-interval", "1")


def _starts(*fleets, job_id):
    return sorted(
        (a, pid) for f in fleets for j, a, pid in f.marks("start") if j == job_id
    )


def _worker_of(db_url, job_id):
    return jobs(db_url, [job_id])[0]["worker_id"]


def _no_recovery(*fleets):
    for fleet in fleets:
        assert fleet.events("job_recovered") == [], fleet.log()[-3000:]


def _ran_once_unrecovered(db_url, job_id, *fleets, timeout):
    """The job ends ``succeeded`` after one run on these fleets, none of
    which recovered anything; then they stop."""
    wait_for(
        lambda: jobs(db_url, [job_id])[0]["status"] != "doing",
        timeout=timeout,
        interval=0.2,
        message="the job to end",
    )
    assert jobs(db_url, [job_id])[0]["status"] == "succeeded"
    assert [a for a, _ in _starts(*fleets, job_id=job_id)] == [0]
    _no_recovery(*fleets)
    for fleet in reversed(fleets):
        fleet.stop(timeout=10)


def _workers(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM procrastinate_workers")}


def _supervisor_silence(db_url, host):
    """Seconds since the supervisor of ``host`` last wrote its heartbeat, by
    the database's clock."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM now() - last_heartbeat)::float "
            "FROM procrastinate_prefork_processes "
            "WHERE kind = 'supervisor' AND host = %s",
            [host],
        ).fetchone()
    assert row is not None
    return row[0]


def test_short_timeout_host_does_not_take_a_long_timeout_hosts_job(
    fleet_factory, db_url
):
    """Issue 11 B: each worker is judged by its own supervisor's timeout. The
    slow host (timeout 30 s) freezes for longer than the fast host would
    judge its own kind by, even with the slack (1 s interval + 5 s), but less
    than its own timeout: its job stays its own (issue 26: the freeze makes
    the difference of timeouts matter)."""
    slow = fleet_factory.new("slow")
    slow.start(
        "--concurrency",
        "1",
        "--hostname",
        "slow",
        "--stalled-timeout",
        "30",
        "--heartbeat-interval",
        "5",
    )
    [job_id] = defer(db_url, "sleep", seconds=20)
    wait_for(lambda: slow.marks("start"), message="the job to start on the slow host")
    fast = fleet_factory.new("fast")
    fast.start(
        "--concurrency", "1", "--hostname", "fast", *SHORT, "--log-level", "debug"
    )
    wait_for(
        lambda: fast.events("sweep_turn"), message="the fast host's first sweep turn"
    )
    with slow.paused():
        time.sleep(12)
        turns = len(fast.events("sweep_turn"))
        # the fast host swept while the slow one was silent for more than
        # the fast host's own timeout plus its slack
        assert _supervisor_silence(db_url, "slow") > 2 + 1 + 5
        time.sleep(2)
        assert len(fast.events("sweep_turn")) > turns
    _ran_once_unrecovered(db_url, job_id, slow, fast, timeout=40)


def test_newcomer_does_not_judge_a_host_before_it_watched_for_its_timeout(
    fleet_factory, db_url
):
    """Issue 26: a supervisor judges a host dead only once its own heartbeats
    have run for that host's timeout. A host with a 10 s timeout freezes; a
    newcomer with a 2 s timeout starts during the freeze and takes sweep
    turns (it may: it has been healthy for its own timeout) while the frozen
    host has been silent for more than 10 s. The host comes back before the
    newcomer has watched for 10 s: its job stays its own."""
    old = fleet_factory.new("old")
    old.start(
        "--concurrency",
        "1",
        "--hostname",
        "old",
        "--stalled-timeout",
        "10",
        "--heartbeat-interval",
        "1",
    )
    [job_id] = defer(db_url, "sleep", seconds=25)
    old.running_child(job_id)
    new = fleet_factory.new("new")
    with old.paused():
        time.sleep(8)
        new.start(
            "--concurrency", "1", "--hostname", "new", *SHORT, "--log-level", "debug"
        )
        wait_for(
            lambda: len(new.events("sweep_turn")) >= 2,
            timeout=15,
            message="two sweep turns of the newcomer",
        )
        assert _supervisor_silence(db_url, "old") > 10
        turns = len(new.events("sweep_turn"))
        wait_for(
            lambda: len(new.events("sweep_turn")) > turns,
            timeout=5,
            message="a turn of the newcomer while the host is silent for longer "
            "than its timeout",
        )
    _ran_once_unrecovered(db_url, job_id, old, new, timeout=40)


def test_stock_worker_draining_keeps_its_job(fleet_factory, db_url):
    """Issue 16 item 4: a stock worker stops its heartbeat while it drains
    and waits for its job as long as it takes; no sweep may take the job."""
    stock = fleet_factory.new("stock")
    stock.start(
        wait_ready=False,
        command=[
            sys.executable,
            "-m",
            "procrastinate",
            "--app",
            APP,
            "worker",
            "--concurrency",
            "1",
            "--fetch-job-polling-interval",
            "0.5",
        ],
    )
    [job_id] = defer(db_url, "sleep", seconds=14)
    wait_for(
        lambda: stock.marks("start"),
        timeout=30,
        message="the stock worker to start the job",
    )
    stock.signal(signal.SIGTERM)  # drains: its heartbeat stops
    prefork = fleet_factory.new("prefork")
    prefork.start("--concurrency", "1", "--hostname", "prefork", *SHORT)
    assert stock.wait(timeout=40) == 0, stock.log()[-3000:]
    wait_for(
        lambda: jobs(db_url, [job_id])[0]["status"] != "doing",
        timeout=10,
        message="the job to end",
    )
    assert jobs(db_url, [job_id])[0]["status"] == "succeeded"
    assert [a for a, _ in _starts(stock, prefork, job_id=job_id)] == [0]
    _no_recovery(prefork)
    prefork.stop(timeout=10)


def test_deleted_worker_rows_under_live_children(fleet_factory, db_url):
    """Issue 16 item 4: worker rows deleted under live children (what a stock
    worker's start-up prune does): the running job keeps its one run, its
    worker gets its row back, and an idle child fetches without crashing."""
    fleet = fleet_factory.new("a")
    fleet.start("--concurrency", "2", "--hostname", "a", *SHORT)
    pids = fleet.wait_children(2)
    [long_id] = defer(db_url, "sleep", seconds=8)
    runner = fleet.running_child(long_id)
    worker_id = _worker_of(db_url, long_id)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM procrastinate_workers")
    [short_id] = defer(db_url, "sleep", seconds=0.2)  # wakes the idle child
    # the running job gets its worker back (so that its child's death would be
    # recovered like any other) while it runs
    wait_for(
        lambda: _worker_of(db_url, long_id) == worker_id,
        timeout=6,
        message="the running job's worker id to come back",
    )
    wait_for(
        lambda: all(
            r["status"] == "succeeded" for r in jobs(db_url, [long_id, short_id])
        ),
        timeout=30,
        interval=0.2,
        message="both jobs to succeed",
    )
    assert [a for a, _ in _starts(fleet, job_id=long_id)] == [0]
    assert [pid for j, _, pid in fleet.marks("start") if j == long_id] == [runner]
    _no_recovery(fleet)
    assert fleet.child_pids() == pids
    wait_for(
        lambda: worker_id in _workers(db_url),
        timeout=10,
        message="the live child's worker row to come back",
    )
    assert fleet.stop(timeout=10) == 0


def _running_twice(fleet_factory, db_url, task):
    """A fleet of two children running a job of ``task`` twice at once: what
    a wrong recovery would do to a running job (with the wake-up it sends).
    The first run fails after 3 s, the second succeeds after 8 s."""
    fleet = fleet_factory.new("a")
    fleet.start("--concurrency", "2", "--hostname", "a")
    [job_id] = defer(db_url, task, first=3, later=8)
    fleet.running_child(job_id)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "SELECT procrastinate_retry_job_v2(%s, NULL, NULL, NULL, NULL)", [job_id]
        )
        conn.execute(
            "SELECT pg_notify('procrastinate_any_queue_v1', "
            '\'{"type": "job_inserted"}\')'
        )
    fleet.running_child(job_id, attempt=1)
    return fleet, job_id


def _final_row(db_url, job_id, timeout):
    wait_for(
        lambda: jobs(db_url, [job_id])[0]["status"] not in ("doing", "todo"),
        timeout=timeout,
        message="the job to end",
    )
    return jobs(db_url, [job_id])[0]


def test_late_outcome_of_an_earlier_run_is_not_written(fleet_factory, db_url):
    """Issue 16 item 4: once a job was put back and runs again, the first
    run's outcome (here a failure) must not overwrite the later run's."""
    fleet, job_id = _running_twice(fleet_factory, db_url, "first_run_fails")
    wait_for(
        lambda: (job_id, 1) in {(j, a) for j, a, _ in fleet.marks("end")},
        timeout=30,
        message="the second run to end",
    )
    row = _final_row(db_url, job_id, timeout=10)
    assert row["status"] == "succeeded", row
    with psycopg.connect(db_url, autocommit=True) as conn:
        events = [
            r[0]
            for r in conn.execute(
                "SELECT type::text FROM procrastinate_events WHERE job_id = %s ORDER "
                "BY id",
                [job_id],
            ).fetchall()
        ]
    assert "failed" not in events, events
    assert fleet.stop(timeout=10) == 0


def test_late_retry_of_an_earlier_run_is_not_written(fleet_factory, db_url):
    """Issue 26: as above, but the first run's failure asks for a retry (its
    task's retry strategy): that late retry must not put the job back in the
    queue under the later run."""
    fleet, job_id = _running_twice(fleet_factory, db_url, "first_run_retries")
    wait_for(
        lambda: job_id in [e["job_id"] for e in fleet.events("outcome_dropped")],
        timeout=20,
        message="the first run's late retry to be dropped",
    )
    row = _final_row(db_url, job_id, timeout=30)
    assert row["status"] == "succeeded", row
    assert [a for a, _ in _starts(fleet, job_id=job_id)] == [0, 1]
    assert fleet.stop(timeout=10) == 0


def test_locked_fleet_table_does_not_make_live_workers_stale(fleet_factory, db_url):
    """Issue 16 item 3: a long ACCESS EXCLUSIVE lock on the fleet table stalls
    every heartbeat; once it goes, no sweep may judge the live workers stale."""
    fleet = fleet_factory.new("a")
    fleet.start(
        "--concurrency",
        "2",
        "--hostname",
        "a",
        "--stalled-timeout",
        "4",
        "--heartbeat-interval",
        "1",
    )
    pids = fleet.wait_children(2)
    [job_id] = defer(db_url, "sleep", seconds=16)
    fleet.running_child(job_id)
    workers_before = _workers(db_url)
    assert len(workers_before) == 2
    with psycopg.connect(db_url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(
                "LOCK TABLE procrastinate_prefork_processes IN ACCESS EXCLUSIVE MODE"
            )
            time.sleep(9)  # more than twice the stalled timeout
    [after_id] = defer(db_url, "sleep", seconds=0.2)  # the idle child fetches
    wait_for(
        lambda: all(
            r["status"] == "succeeded" for r in jobs(db_url, [job_id, after_id])
        ),
        timeout=40,
        interval=0.2,
        message="both jobs to succeed",
    )
    assert [a for a, _ in _starts(fleet, job_id=job_id)] == [0]
    _no_recovery(fleet)
    assert workers_before <= _workers(db_url)
    assert fleet.child_pids() == pids
    assert fleet.stop(timeout=10) == 0


@pytest.mark.skipif(
    not throwaway_pg(),
    reason="restarts PostgreSQL: needs the "
    "throwaway server of scripts/test.sh (PROCRASTINATE_PREFORK_THROWAWAY_PG=1)",
)
def test_supervisor_started_after_an_outage_does_not_take_live_work(
    fleet_factory, db_url
):
    """Issue 11 C: a supervisor that starts as the database comes back must not
    judge hosts that lived through the outage before they could refresh their
    heartbeats. The live host's worker row stays locked for a few seconds
    after the restart, standing in for a host that reconnects late."""
    old = fleet_factory.new("old")
    old.start(
        "--concurrency",
        "1",
        "--hostname",
        "old",
        "--stalled-timeout",
        "6",
        "--heartbeat-interval",
        "1",
    )
    [job_id] = defer(db_url, "sleep", seconds=30)
    old.running_child(job_id)
    worker_id = _worker_of(db_url, job_id)
    pg_ctl("stop", "-m", "fast", "-w")
    try:
        time.sleep(8)  # longer than the stalled timeout
    finally:
        pg_ctl("start", "-w")
    release = threading.Event()
    locked = threading.Event()

    def hold_row() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
            conn.execute(
                "SELECT 1 FROM procrastinate_workers WHERE id = %s FOR UPDATE",
                [worker_id],
            )
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold_row)
    holder.start()
    try:
        assert locked.wait(10)
        new = fleet_factory.new("new")
        new.start(
            "--concurrency",
            "1",
            "--hostname",
            "new",
            "--stalled-timeout",
            "6",
            "--heartbeat-interval",
            "1",
        )
        time.sleep(3)  # the newcomer's first sweeps
    finally:
        release.set()
        holder.join()
    _ran_once_unrecovered(db_url, job_id, old, new, timeout=60)
