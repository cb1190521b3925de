"""Issue 25 items 1-2: with ``--child-concurrency 1`` a child runs its worker
on one dedicated session in autocommit, and records a job's end and fetches
the next one in one statement."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.blackhole import BlackHole
from tests.fleet_helper import defer, jobs, wait_for


def _child_backends(conn: psycopg.Connection, child_pid: int) -> list[int]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE %s",
            [f"prefork:%:{child_pid}"],
        ).fetchall()
    ]


def _terminate_child_session(db_url: str, child_pid: int) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        [backend] = wait_for(
            lambda: _child_backends(conn, child_pid),
            message="the child's one session",
        )
        conn.execute("SELECT pg_terminate_backend(%s)", [backend])
        wait_for(
            lambda: backend not in _child_backends(conn, child_pid),
            message="the child's session to end",
        )
    return backend


def _runs(fleet, phase: str = "end") -> list[tuple[int, int]]:
    return sorted((j, a) for j, a, _ in fleet.marks(phase))


def test_session_terminated_between_jobs_is_reopened(fleet, db_url):
    fleet.start("--concurrency", "1")
    [child] = fleet.wait_children(1)
    [first] = defer(db_url, "cpu", ms=1)
    wait_for(lambda: _runs(fleet) == [(first, 0)], message="the first job")
    old = _terminate_child_session(db_url, child)
    # one job, one wake-up: if the dead session made the fetch fail, the job
    # would wait for the next poll (30 s in the tests)
    [second] = defer(db_url, "cpu", ms=1)
    wait_for(
        lambda: _runs(fleet) == [(first, 0), (second, 0)],
        timeout=10,
        message="the job deferred after the session ended",
    )
    more = defer(db_url, "cpu", count=5, ms=1)
    wait_for(
        lambda: {r["status"] for r in jobs(db_url, more)} == {"succeeded"},
        message="the later jobs",
    )
    assert _runs(fleet, "start") == sorted((j, 0) for j in [first, second, *more])
    assert fleet.child_pids() == [child]  # the same child: it never crashed
    assert fleet.events("session_reopened")
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert old not in _child_backends(conn, child)
        assert len(_child_backends(conn, child)) == 1
    assert fleet.stop() == 0


def test_session_terminated_while_a_job_runs_loses_no_outcome(fleet, db_url):
    fleet.start("--concurrency", "1")
    [child] = fleet.wait_children(1)
    [running] = defer(db_url, "sleep", seconds=2)
    fleet.running_child(running)
    _terminate_child_session(db_url, child)
    [waiting] = defer(db_url, "cpu", ms=1)
    wait_for(
        lambda: (
            {r["status"] for r in jobs(db_url, [running, waiting])} == {"succeeded"}
        ),
        timeout=15,
        message="both jobs to succeed",
    )
    [row] = jobs(db_url, [running])
    assert row["attempts"] == 1  # recorded once, by its only run
    assert _runs(fleet, "start") == sorted([(running, 0), (waiting, 0)])
    assert fleet.child_pids() == [child]
    assert fleet.stop() == 0


def test_a_job_costs_one_transaction_of_the_child(fleet, db_url):
    """Ending a job and fetching the next is one autocommitted statement: no
    BEGIN/COMMIT around it, no separate fetch (procrastinate's worker on a
    pool spends two transactions per job, plus the pool's check)."""
    count = 200
    ids = defer(db_url, "noop", count=count)

    def commits() -> int:
        with psycopg.connect(db_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT xact_commit FROM pg_stat_database "
                "WHERE datname = current_database()"
            ).fetchone()
        assert row is not None
        return int(row[0])

    before = commits()
    fleet.start("--concurrency", "1")
    wait_for(
        lambda: {r["status"] for r in jobs(db_url, ids)} == {"succeeded"},
        timeout=60,
        message="the jobs to succeed",
    )
    assert fleet.stop() == 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        # a session's counters are flushed when it ends
        wait_for(
            lambda: (
                not conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                ).fetchone()
            ),
            message="the fleet's sessions to end",
        )
    spent = commits() - before
    # the fleet's start, heartbeats and the test's own reads are in there too
    assert spent < 1.5 * count, spent


def test_failed_fetch_part_still_records_the_end(fleet, db_url):
    """The fetch in the end's statement fails (here an error injected in the
    fetch of every combined statement): the end is recorded alone, and the
    worker's own fetch takes the next job."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            """
            CREATE FUNCTION test_fail_combined_fetch() RETURNS trigger AS $$
            BEGIN
                IF OLD.status = 'todo' AND NEW.status = 'doing'
                   AND current_query() LIKE '%ended.fetcher_id%' THEN
                    RAISE EXCEPTION 'injected failure of the fetch part';
                END IF;
                RETURN NEW;
            END $$ LANGUAGE plpgsql;
            CREATE TRIGGER test_fail_combined_fetch BEFORE UPDATE
            ON procrastinate_jobs FOR EACH ROW
            EXECUTE FUNCTION test_fail_combined_fetch();
            """
        )
    ids = defer(db_url, "cpu", count=5, ms=1)
    fleet.start("--concurrency", "1")
    wait_for(
        lambda: {r["status"] for r in jobs(db_url, ids)} == {"succeeded"},
        timeout=20,
        message="every job to succeed",
    )
    assert _runs(fleet, "start") == sorted((j, 0) for j in ids)
    assert {r["attempts"] for r in jobs(db_url, ids)} == {1}
    failed = fleet.events("finish_fetch_failed")
    assert len(failed) >= len(ids) - 1  # each end with a job left to fetch
    assert fleet.stop() == 0


def test_late_outcome_refused_and_the_next_job_fetched_in_one_statement(fleet, db_url):
    """The first run's failure comes after the job was put back: the combined
    statement writes nothing for it, and its fetch takes the job again."""
    fleet.start("--concurrency", "1")
    [child] = fleet.wait_children(1)
    [job_id] = defer(db_url, "first_run_fails", first=2, later=0)
    fleet.running_child(job_id)
    with psycopg.connect(db_url, autocommit=True) as conn:
        # what a wrong recovery would do (without a wake-up: the only child
        # is busy, its next fetch is the one with the late end)
        conn.execute(
            "SELECT procrastinate_retry_job_v2(%s, NULL, NULL, NULL, NULL)", [job_id]
        )
    wait_for(
        lambda: jobs(db_url, [job_id])[0]["status"] == "succeeded",
        timeout=15,
        message="the second run to succeed",
    )
    assert _runs(fleet, "start") == [(job_id, 0), (job_id, 1)]
    assert {pid for _, _, pid in fleet.marks("start")} == {child}
    assert [e["job_id"] for e in fleet.events("outcome_dropped")] == [job_id]
    with psycopg.connect(db_url, autocommit=True) as conn:
        types = [
            r[0]
            for r in conn.execute(
                "SELECT type::text FROM procrastinate_events WHERE job_id = %s",
                [job_id],
            ).fetchall()
        ]
    assert "failed" not in types, types
    assert fleet.stop() == 0


@contextlib.contextmanager
def _child_waiting_on_row(
    db_url: str, job_id: int, child: int
) -> Iterator[psycopg.Connection]:
    """Hold the row of ``job_id`` (the child's running job) until the child's
    end-and-fetch statement waits on it; yields the holder, whose commit lets
    the statement go on."""
    with psycopg.connect(db_url) as holder:
        holder.execute(
            "SELECT 1 FROM procrastinate_jobs WHERE id = %s FOR UPDATE", [job_id]
        )
        with psycopg.connect(db_url, autocommit=True) as conn:
            wait_for(
                lambda: conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE %s "
                    "AND wait_event_type = 'Lock'",
                    [f"prefork:%:{child}"],
                ).fetchone(),
                message="the child's end-and-fetch to wait on the row lock",
            )
        yield holder


@pytest.mark.timeout(60)
def test_job_fetched_with_an_end_is_given_back_when_the_child_stops(fleet, db_url):
    """A stop that comes while the end-and-fetch statement runs: the worker
    does not start the job it fetched, so the job goes back to todo, with no
    attempt spent, instead of staying doing under a worker gone."""
    fleet.start("--concurrency", "1")
    [child] = fleet.wait_children(1)
    [first] = defer(db_url, "sleep", seconds=1)
    fleet.running_child(first)
    [second] = defer(db_url, "cpu", ms=1)
    with _child_waiting_on_row(db_url, first, child) as holder:
        fleet.signal(signal.SIGTERM)
        wait_for(
            lambda: fleet.child_states().get(child) == "draining",
            message="the child to drain",
        )
        release = threading.Timer(0.2, holder.commit)
        release.start()
        assert fleet.wait(timeout=30) == 0
        release.join()
    first_row, second_row = jobs(db_url, [first, second])
    assert first_row["status"] == "succeeded"
    assert (second_row["status"], second_row["attempts"]) == ("todo", 0)
    assert second_row["worker_id"] is None
    assert [e["job_id"] for e in fleet.events("fetched_job_released")] == [second]
    assert (second, 0) not in _runs(fleet, "start")


@pytest.mark.timeout(90)
def test_job_fetched_without_a_reply_is_given_back_and_runs(fleet, db_url):
    """The end-and-fetch statement commits, then the connection breaks before
    its reply reaches the child (a relay swallows the reply, then cuts the
    connection): the job it fetched is doing under the child's worker, which
    never got it. The child, alive, gives it back after reconnecting and runs
    it, once; without that it would stay doing while the child lives."""
    hole = BlackHole.to(db_url)
    try:
        fleet.start("--concurrency", "1", env={"DATABASE_URL": hole.url(db_url)})
        [child] = fleet.wait_children(1)
        # long enough to be still running when the row lock is taken
        [first] = defer(db_url, "sleep", seconds=3)
        fleet.running_child(first)
        [second] = defer(db_url, "cpu", ms=1)
        with _child_waiting_on_row(db_url, first, child) as holder:
            hole.swallowing.set()
            time.sleep(0.3)  # each relay thread looks at least every 0.1 s
            holder.commit()
            wait_for(
                lambda: (
                    [r["status"] for r in jobs(db_url, [first, second])]
                    == ["succeeded", "doing"]
                ),
                message="the statement to commit (its reply swallowed)",
            )
        hole.cut()
        hole.swallowing.clear()
        wait_for(
            lambda: jobs(db_url, [second])[0]["status"] == "succeeded",
            timeout=20,
            message="the job fetched without a reply to run",
        )
        assert _runs(fleet, "start") == [(first, 0), (second, 0)]
        assert {pid for _, _, pid in fleet.marks("start")} == {child}
        assert fleet.child_pids() == [child]  # given back by the live child
        assert [e["job_id"] for e in fleet.events("lost_fetch_released")] == [second]
        assert fleet.stop() == 0
    finally:
        hole.close()
