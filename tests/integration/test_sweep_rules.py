"""The sweep's rules, one by one, on rows written by hand (real PostgreSQL):
which ``doing`` jobs a sweeper may recover, given the fleet table, the
worker rows and how long the sweeper itself has been healthy."""

from __future__ import annotations

import psycopg
import pytest

from procrastinate_prefork.fleet import recovery

from ..fleet_helper import defer


def _judge(
    healthy_for: float = 10_000, stock_timeout: float = 3600
) -> recovery.Judgement:
    # the sweeper's own settings: a 2 s stalled timeout, 1 s heartbeats
    return recovery.Judgement(
        healthy_for=healthy_for,
        slack=5,
        own_timeout=2,
        own_interval=1,
        stock_timeout=stock_timeout,
    )


class Rows:
    def __init__(self, conn: psycopg.Connection, db_url: str):
        self.conn = conn
        self.db_url = db_url

    def supervisor(
        self,
        *,
        stalled: float,
        interval: float,
        silent_for: float,
        state: str = "running",
    ) -> int:
        return self.conn.execute(
            "INSERT INTO procrastinate_prefork_processes (kind, host, pid, state, "
            "stalled_timeout, heartbeat_interval, last_heartbeat) VALUES "
            "('supervisor', 'h', 1, %s, %s, %s, now() - make_interval(secs => %s)) "
            "RETURNING id",
            [state, stalled, interval, silent_for],
        ).fetchone()[0]

    def worker(self, silent_for: float) -> int:
        return self.conn.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) "
            "VALUES (now() - make_interval(secs => %s)) RETURNING id",
            [silent_for],
        ).fetchone()[0]

    def child(
        self, supervisor: int, slot: int, worker: int | None, job: int | None = None
    ) -> None:
        self.conn.execute(
            "INSERT INTO procrastinate_prefork_processes (kind, host, pid, state, "
            "supervisor_id, slot, worker_id, job_id, job_ids) VALUES "
            "('child', 'h', 2, 'busy', %s, %s, %s, %s, %s)",
            [supervisor, slot, worker, job, [job] if job else []],
        )

    def doing(self, worker: int, started_ago: float = 0) -> int:
        [job_id] = defer(self.db_url, "sleep")
        self.conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s "
            "WHERE id = %s",
            [worker, job_id],
        )
        self.conn.execute(
            "UPDATE procrastinate_events SET at = now() - make_interval("
            "secs => %s) WHERE job_id = %s AND type = 'started'",
            [started_ago, job_id],
        )
        return job_id

    def orphan(self, job_id: int) -> None:
        self.conn.execute(
            "UPDATE procrastinate_jobs SET worker_id = NULL WHERE id = %s", [job_id]
        )

    def swept(self, judgement: recovery.Judgement) -> set[int]:
        found = recovery.sweep_stalled(
            self.conn, judgement=judgement, max_crash_retries=3
        )
        assert found is not None
        return {r.job_id for r in found}

    def workers(self) -> set[int]:
        return {r[0] for r in self.conn.execute("SELECT id FROM procrastinate_workers")}


@pytest.fixture
def rows(db, db_url) -> Rows:
    return Rows(db, db_url)


def test_each_host_is_judged_by_its_own_declared_timeout(rows):
    slow = rows.supervisor(stalled=30, interval=5, silent_for=0)
    slow_worker = rows.worker(silent_for=10)  # older than the sweeper's 2 s
    rows.child(slow, 0, slow_worker)
    slow_job = rows.doing(slow_worker)
    dead = rows.supervisor(stalled=3, interval=1, silent_for=60)
    dead_worker = rows.worker(silent_for=60)
    rows.child(dead, 0, dead_worker)
    dead_job = rows.doing(dead_worker)
    # the dead host declared 3 s, but 1 s heartbeats + the sweeper's slack: 6 s
    assert rows.swept(_judge(healthy_for=5.9)) == set()
    assert rows.swept(_judge(healthy_for=6)) == {dead_job}
    assert slow_job not in rows.swept(_judge())
    assert slow_worker in rows.workers() and dead_worker not in rows.workers()


def test_a_sweeper_judges_nobody_before_it_was_healthy_for_their_timeout(rows):
    host = rows.supervisor(stalled=30, interval=5, silent_for=100)
    worker = rows.worker(silent_for=100)
    rows.child(host, 0, worker)
    job = rows.doing(worker)
    assert rows.swept(_judge(healthy_for=29)) == set()
    assert worker in rows.workers()  # nor deletes its row
    assert rows.swept(_judge(healthy_for=30)) == {job}


def test_stock_workers_are_judged_by_the_stock_timeout(rows):
    stock_worker = rows.worker(silent_for=100)  # no fleet row claims it
    job = rows.doing(stock_worker)
    assert rows.swept(_judge(stock_timeout=3600)) == set()
    assert stock_worker in rows.workers()
    assert rows.swept(_judge(stock_timeout=60)) == {job}
    assert stock_worker not in rows.workers()


def test_jobs_without_a_worker_row(rows):
    live = rows.supervisor(stalled=30, interval=5, silent_for=0)
    dead = rows.supervisor(stalled=30, interval=5, silent_for=100)
    worker = rows.worker(silent_for=0)
    live_job, dead_job, stock_job = (
        rows.doing(worker, started_ago=100) for _ in range(3)
    )
    for job in (live_job, dead_job, stock_job):
        rows.orphan(job)
    rows.child(live, 0, None, job=live_job)
    rows.child(dead, 0, None, job=dead_job)
    # a live child runs it: never; a dead one did: yes; nobody says: by the
    # time it has been running, against the stock timeout
    assert rows.swept(_judge(stock_timeout=3600)) == {dead_job}
    assert rows.swept(_judge(stock_timeout=60)) == {stock_job}


def test_a_live_childs_job_is_its_supervisors_even_if_its_worker_is_stale(rows):
    # a wedged child: its supervisor stopped refreshing its worker row, and
    # will kill it and recover the job itself
    live = rows.supervisor(stalled=30, interval=5, silent_for=0)
    worker = rows.worker(silent_for=100)
    job = rows.doing(worker)
    rows.child(live, 0, worker, job=job)
    assert rows.swept(_judge()) == set()
    assert worker in rows.workers()  # a job of it is still doing
    # a stale claim (the job was fetched again by another worker) counts not
    other = rows.worker(silent_for=100)
    rows.conn.execute(
        "UPDATE procrastinate_jobs SET worker_id = %s WHERE id = %s", [other, job]
    )
    assert rows.swept(_judge(stock_timeout=60)) == {job}
