"""The fleet's queries read what they need, not the whole job table, however
many finished or waiting jobs it holds. Plans are those PostgreSQL actually
ran (auto_explain, nested statements included: the foreign key's own
``UPDATE ... SET worker_id = NULL`` too). Nothing here is timed."""

from __future__ import annotations

import re

import psycopg
import pytest

from procrastinate_prefork.fleet import recovery
from procrastinate_prefork.fleet import table as fleet
from procrastinate_prefork.supervisor import poller

ROWS = 30_000


class Plans:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.texts: list[str] = []
        conn.add_notice_handler(
            lambda diag: self.texts.append(diag.message_primary or "")
        )
        conn.execute("LOAD 'auto_explain'")
        conn.execute("SET auto_explain.log_min_duration = 0")
        conn.execute("SET auto_explain.log_nested_statements = on")
        # row counts (``Rows Removed by Filter``), not timings
        conn.execute("SET auto_explain.log_analyze = on")
        conn.execute("SET auto_explain.log_timing = off")
        conn.execute("SET client_min_messages = log")

    def scans_of_jobs(self) -> list[str]:
        return [t for t in self.texts if "Seq Scan on procrastinate_jobs " in t]

    def walks(self, rows: int) -> list[str]:
        """Plans that read ``rows`` rows or more only to filter them out."""
        return [
            t
            for t in self.texts
            for n in re.findall(r"Rows Removed by Filter: (\d+)", t)
            if int(n) >= rows
        ]


@pytest.fixture
def big(db: psycopg.Connection) -> psycopg.Connection:
    db.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
        "SELECT 'default', 'finished', '{}', 'succeeded' "
        "FROM generate_series(1, %s)",
        [ROWS],
    )
    db.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
        "SELECT 'elsewhere', 'waiting', '{}', 'todo' FROM generate_series(1, %s)",
        [ROWS],
    )
    db.execute("ANALYZE procrastinate_jobs")
    return db


def _doing_job(db: psycopg.Connection, heartbeat: str = "now()") -> tuple[int, int]:
    row = db.execute(
        f"WITH w AS (INSERT INTO procrastinate_workers (last_heartbeat) "
        f"VALUES ({heartbeat}) RETURNING id) "
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, "
        "worker_id) SELECT 'default', 'victim', '{}', 'doing', id FROM w "
        "RETURNING id, worker_id"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _status(db: psycopg.Connection, job_id: int) -> str:
    row = db.execute(
        "SELECT status FROM procrastinate_jobs WHERE id = %s", [job_id]
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_recovering_a_dead_childs_job_reads_no_job_table_in_full(big):
    job_id, worker_id = _doing_job(big)
    plans = Plans(big)
    done = recovery.recover_worker_jobs(
        big, [worker_id], cause="test", max_crash_retries=3
    )
    assert [r.job_id for r in done] == [job_id]
    assert _status(big, job_id) == "todo"
    # deleting the worker row sets worker_id = NULL on its jobs (a foreign key)
    assert any("worker_id" in t and "NULL" in t for t in plans.texts), plans.texts
    assert plans.scans_of_jobs() == []


def test_the_sweep_reads_doing_jobs_only(big):
    job_id, _ = _doing_job(big, heartbeat="now() - interval '1 hour'")
    plans = Plans(big)
    judgement = recovery.Judgement(
        healthy_for=3600, slack=5, own_timeout=30, own_interval=5, stock_timeout=30
    )
    swept = recovery.sweep_stalled(big, judgement=judgement, max_crash_retries=3)
    assert [r.job_id for r in swept or []] == [job_id]
    assert _status(big, job_id) == "todo"
    assert plans.scans_of_jobs() == []
    # the waiting jobs are not walked through either
    assert plans.walks(ROWS) == []


@pytest.mark.parametrize("queues", [["default"], ["default", "other"]])
def test_the_autoscalers_count_reads_its_queues_todo_jobs_only(big, queues):
    """The todo jobs of a queue the fleet does not serve are not walked."""
    plans = Plans(big)
    # as the autoscaler calls it, once a second on one session: past psycopg's
    # prepare threshold and PostgreSQL's switch to a generic plan
    for _ in range(20):
        assert fleet.count_runnable(big, queues) == 0
    assert len(plans.texts) >= 12
    assert plans.walks(ROWS // 10) == []
    assert plans.scans_of_jobs() == []


def test_the_autoscalers_count_of_every_queue_is_capped(big):
    plans = Plans(big)
    assert fleet.count_runnable(big, None) == 1000
    assert plans.texts
    assert plans.scans_of_jobs() == []


@pytest.mark.parametrize("queues", [["default"], ["default", "other"]])
def test_the_supervisors_poll_reads_its_queues_todo_jobs_only(big, queues):
    """Issue 25: the host's one poll, once an interval, walks neither the
    finished jobs nor the other queues' waiting ones."""
    plans = Plans(big)
    for _ in range(20):
        assert poller.count_runnable(big, queues, 4) == 0
    assert plans.walks(ROWS // 10) == []
    assert plans.scans_of_jobs() == []


def test_the_supervisors_poll_stops_at_the_children_it_can_wake(big):
    """Of every queue: the count stops at its limit; a job whose lock a
    running job holds is not runnable."""
    plans = Plans(big)
    assert poller.count_runnable(big, None, 4) == 4
    assert plans.walks(ROWS // 10) == []
    assert plans.scans_of_jobs() == []
    big.execute("UPDATE procrastinate_jobs SET status = 'failed' WHERE status = 'todo'")
    big.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, lock) "
        "VALUES ('default', 'held', '{}', 'doing', 'L'), "
        "('default', 'blocked', '{}', 'todo', 'L')"
    )
    assert poller.count_runnable(big, ["default"], 4) == 0
    assert poller.count_runnable(big, None, 4) == 0
    big.execute(
        "UPDATE procrastinate_jobs SET status = 'succeeded' "
        "WHERE lock = 'L' AND status = 'doing'"
    )
    assert poller.count_runnable(big, ["default"], 4) == 1
