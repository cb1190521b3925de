"""The fleet table follows the children's running jobs within about a second,
not a heartbeat: a job that ended 1.5 s ago is no longer listed, one that
started 1.5 s ago is; and while nothing changes, the supervisor writes
nothing besides its heartbeats (counted by a trigger on the fleet table)."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import psycopg

from procrastinate_prefork.fleet import health, status

from ..fleet_helper import defer, jobs, wait_for

#: far longer than the test: only the writes of the running jobs can show a job
LONG_HEARTBEAT = ("--heartbeat-interval", "60", "--stalled-timeout", "120")


def _status_json(db_url: str) -> dict[str, Any]:
    """What ``status --json`` prints (the same function, in this process)."""
    out = io.StringIO()
    with psycopg.connect(db_url, autocommit=True) as conn:
        status.report(
            status.psycopg_reader(conn),
            health.FleetQuery(),
            as_json=True,
            check=False,
            out=out,
            err=io.StringIO(),
        )
    return json.loads(out.getvalue())


def _listed(doc: dict[str, Any]) -> list[tuple[int | None, str, float]]:
    return [
        (child["job_id"], child["state"], child["as_of_age"])
        for sup in doc["supervisors"]
        for child in sup["children"]
    ]


def _status_of(db_url: str, job_id: int) -> str:
    return str(jobs(db_url, [job_id])[0]["status"])


def test_a_job_is_listed_1_5_s_after_it_starts_and_gone_1_5_s_after_it_ends(
    fleet, db_url
):
    fleet.start("--concurrency", "1", *LONG_HEARTBEAT)
    # the rows of the start are written; the next heartbeat is a minute away
    wait_for(lambda: _listed(_status_json(db_url)), message="the child's row")
    (job_id,) = defer(db_url, "sleep", seconds=4)
    wait_for(lambda: _status_of(db_url, job_id) == "doing", 20, 0.02, "the start")
    started = time.monotonic()
    time.sleep(max(0.0, started + 1.5 - time.monotonic()))
    ((shown, state, as_of),) = _listed(_status_json(db_url))
    assert (shown, state) == (job_id, "busy")
    assert as_of < 1.5  # written after the job started
    wait_for(lambda: _status_of(db_url, job_id) == "succeeded", 20, 0.02, "the end")
    ended = time.monotonic()
    time.sleep(max(0.0, ended + 1.5 - time.monotonic()))
    ((shown, state, as_of),) = _listed(_status_json(db_url))
    assert (shown, state) == (None, "idle")
    assert as_of < time.monotonic() - started  # rewritten since the start


COUNTER = """
CREATE TABLE fleet_writes (txid bigint, kind text, beat boolean, job_id bigint);
CREATE FUNCTION count_fleet_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fleet_writes VALUES (txid_current(), NEW.kind,
        NEW.last_heartbeat IS DISTINCT FROM OLD.last_heartbeat, NEW.job_id);
    RETURN NEW;
END $$;
CREATE TRIGGER count_fleet_write AFTER UPDATE ON procrastinate_prefork_processes
    FOR EACH ROW EXECUTE FUNCTION count_fleet_write();
"""


def _writes(db_url: str) -> tuple[int, int, set[int]]:
    """Transactions that updated the fleet table: heartbeats (the
    supervisor's heartbeat time moved), the others, and the job ids the
    others wrote."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT txid, bool_or(kind = 'supervisor' AND beat),"
            " array_remove(array_agg(job_id), NULL)"
            " FROM fleet_writes GROUP BY txid"
        ).fetchall()
    beats = sum(1 for _, beat, _ in rows if beat)
    others = [ids for _, beat, ids in rows if not beat]
    return beats, len(others), {i for ids in others for i in ids}


def test_no_write_but_heartbeats_while_no_job_changes(fleet, db_url):
    fleet.start(
        "--concurrency", "2", "--heartbeat-interval", "3", "--stalled-timeout", "30"
    )  # fmt: skip
    time.sleep(1.5)  # the children's start (starting -> idle) is written
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(COUNTER)
    time.sleep(7)
    beats, others, _ = _writes(db_url)
    assert beats >= 2 and others == 0, (beats, others)
    # A job starts and ends: written between heartbeats, with its id.
    (job_id,) = defer(db_url, "sleep", seconds=1.5)
    wait_for(lambda: _status_of(db_url, job_id) == "succeeded", 20, 0.05, "the job")
    time.sleep(1.5)
    _, others, written = _writes(db_url)
    assert others >= 1 and job_id in written
    # Quiet again: heartbeats only.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE fleet_writes")
    time.sleep(7)
    beats, others, _ = _writes(db_url)
    assert beats >= 2 and others == 0, (beats, others)
