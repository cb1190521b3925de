"""Many supervisors recovering at once never recover one job twice, and never
touch the jobs of a live worker (real PostgreSQL, concurrent sessions)."""

from __future__ import annotations

import threading

import psycopg

from procrastinate_prefork.fleet import recovery

from ..fleet_helper import defer

#: workers with no fleet row (as here) are judged by the stock timeout
JUDGE_STOCK_AFTER_30S = recovery.Judgement(
    healthy_for=3600,
    slack=7,
    own_timeout=30,
    own_interval=5,
    stock_timeout=30,
)


def _doing_jobs(conn, count: int, heartbeat_age: str) -> tuple[int, list[int]]:
    worker_id = conn.execute(
        "INSERT INTO procrastinate_workers (last_heartbeat) "
        "VALUES (now() - %s::interval) RETURNING id",
        [heartbeat_age],
    ).fetchone()[0]
    ids = []
    for _ in range(count):
        row = conn.execute(
            "SELECT id FROM procrastinate_fetch_job_v2(NULL, %s)", [worker_id]
        ).fetchone()
        ids.append(row[0])
    return worker_id, ids


def test_concurrent_sweeps_and_reaps_recover_each_job_once(db_url):
    defer(db_url, "noop", count=60)
    with psycopg.connect(db_url, autocommit=True) as conn:
        dead_a, jobs_a = _doing_jobs(conn, 25, "1 hour")
        dead_b, jobs_b = _doing_jobs(conn, 25, "1 hour")
        alive, jobs_alive = _doing_jobs(conn, 10, "0 seconds")

    barrier = threading.Barrier(8)
    results: list[list[recovery.Recovery]] = []
    errors: list[BaseException] = []

    def run(kind: int) -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                barrier.wait()
                for _ in range(5):
                    if kind % 2:
                        found = (
                            recovery.sweep_stalled(
                                conn,
                                judgement=JUDGE_STOCK_AFTER_30S,
                                max_crash_retries=3,
                            )
                            or []
                        )
                    else:  # as a supervisor reaping the dead workers' children
                        found = recovery.recover_worker_jobs(
                            conn,
                            [dead_a, dead_b],
                            cause="test",
                            max_crash_retries=3,
                            delete_workers=False,
                        )
                    results.append(found)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors

    recovered = [r.job_id for batch in results for r in batch]
    assert sorted(recovered) == sorted(jobs_a + jobs_b)  # each exactly once
    with psycopg.connect(db_url, autocommit=True) as conn:
        # a dead worker's row goes once none of its jobs is left doing: at the
        # latest in the sweep after the reapers committed
        recovery.sweep_stalled(
            conn, judgement=JUDGE_STOCK_AFTER_30S, max_crash_retries=3
        )
        rows = {
            job_id: rest
            for job_id, *rest in conn.execute(
                "SELECT j.id, j.status::text, j.attempts, c.crashes "
                "FROM procrastinate_jobs j "
                "LEFT JOIN procrastinate_prefork_job_crashes c ON c.job_id = j.id"
            ).fetchall()
        }
        workers = {r[0] for r in conn.execute("SELECT id FROM procrastinate_workers")}
    for job_id in jobs_a + jobs_b:
        assert rows[job_id] == ["todo", 1, 1], (job_id, rows[job_id])
    for job_id in jobs_alive:
        assert rows[job_id] == ["doing", 0, None]
    assert alive in workers  # a live worker's row is never pruned
    assert dead_a not in workers and dead_b not in workers  # stale rows pruned


def test_retry_notifies_like_an_insert(db_url):
    defer(db_url, "noop")
    with (
        psycopg.connect(db_url, autocommit=True) as listener,
        psycopg.connect(db_url, autocommit=True) as conn,
    ):
        listener.execute("LISTEN procrastinate_any_queue_v1")
        listener.execute('LISTEN "procrastinate_queue_v1#default"')
        dead, [job_id] = _doing_jobs(conn, 1, "1 hour")
        recovery.recover_worker_jobs(conn, [dead], cause="test", max_crash_retries=3)
        received = {
            (n.channel, n.payload) for n in listener.notifies(timeout=2, stop_after=2)
        }
    payload = f'{{"type": "job_inserted", "job_id": {job_id}}}'
    assert received == {
        ("procrastinate_any_queue_v1", payload),
        ("procrastinate_queue_v1#default", payload),
    }
