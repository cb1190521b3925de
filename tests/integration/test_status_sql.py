"""The status views select and count in the database what the health rules
would select and count in Python: the same verdict, problems, warnings and
listing, for every filter, from a fleet table holding every kind of row. And
a probe reads only the live supervisors it asks about, however many stopped
rows the table holds (plans PostgreSQL ran; nothing here is timed)."""

from __future__ import annotations

import re

import psycopg
import pytest

from procrastinate_prefork.fleet import health, schema, snapshot, status
from procrastinate_prefork.fleet import table as fleet

from .test_big_tables import Plans

#: (host, pid, state, crash_loop, queues, stalled_timeout, heartbeat age s)
SUPERVISORS = [
    ("h1", 11, "running", False, None, 30.0, 1),
    ("h1", 12, "running", True, ["a"], 30.0, 2),  # fresh, crash loop
    ("h1", 13, "running", True, ["a", "b"], 30.0, 100),  # stale, crash loop
    ("h2", 21, "draining", False, [], None, 200),  # default stale_after (30 s)
    ("h2", 22, "running", False, ["b"], None, 400),  # default: stale
    ("h2", 23, "stopped", False, ["a"], 30.0, 1),
    ("h3", 31, "running", False, ["c"], 0.0, 5),  # 0: the default
]
#: per supervisor pid: (slot, state, heartbeat age s) of its children
CHILDREN = {
    11: [(0, "idle", 1), (1, "busy", 1), (2, "starting", 1), (3, "stopped", 1)],
    12: [(0, "idle", 40), (1, "busy", 29)],
    13: [(0, "idle", 1)],
    21: [(0, "idle", 250), (1, "busy", 350)],
    22: [(0, "idle", 1)],
    23: [(0, "idle", 1)],
    31: [(0, "busy", 1), (1, "draining", 1)],
}

QUERIES = [
    health.FleetQuery(),
    health.FleetQuery(host="h1"),
    health.FleetQuery(host="h2", min_children=0),
    health.FleetQuery(host="nowhere"),
    health.FleetQuery(queue="a"),
    health.FleetQuery(queue="b", min_children=3),
    health.FleetQuery(queue="zz"),
    health.FleetQuery(host="h1", queue="b"),
    health.FleetQuery(min_children=50),
    # fewer listed than selected: the problems (12, 13, 21, 22) first
    health.FleetQuery(limit=1),
    health.FleetQuery(limit=3),
    health.FleetQuery(limit=4),
    health.FleetQuery(queue="a", limit=1),
    health.FleetQuery(host="h2", limit=1),
    health.FleetQuery(limit=0),
]


def _fill(conn: psycopg.Connection) -> None:
    for host, pid, state, crash, queues, timeout, age in SUPERVISORS:
        row = conn.execute(
            "INSERT INTO procrastinate_prefork_processes (kind, host, pid, state, "
            "crash_loop, queues, stalled_timeout, concurrency, last_heartbeat) "
            "VALUES ('supervisor', %s, %s, %s, %s, %s, %s, 2, "
            "now() - make_interval(secs => %s)) RETURNING id",
            [host, pid, state, crash, queues, timeout, age],
        ).fetchone()
        assert row is not None
        for slot, child_state, child_age in CHILDREN[pid]:
            conn.execute(
                "INSERT INTO procrastinate_prefork_processes (kind, host, pid, "
                "supervisor_id, slot, state, last_heartbeat) VALUES ('child', %s, "
                "%s, %s, %s, %s, now() - make_interval(secs => %s))",
                [host, pid * 100 + slot, row[0], slot, child_state, child_age],
            )


@pytest.fixture
def filled(db_url: str):
    with psycopg.connect(db_url) as conn:  # one transaction: one now()
        _fill(conn)
        yield conn


def _in_python(conn: psycopg.Connection, query: health.FleetQuery):
    """Every live row read, selected and counted by the rules in Python."""
    rows = fleet.fetch_fleet(conn, live_only=True)
    return health.fleet_health(snapshot.from_rows(rows), query)


@pytest.mark.parametrize("query", QUERIES, ids=repr)
def test_the_summary_counts_what_the_rules_count(filled, query):
    expected = _in_python(filled, query).as_dict()
    got = status.judge(status.psycopg_reader(filled), query, listing=False)
    assert got.supervisors == ()
    assert got.as_dict()["supervisors_listed"] == 0
    unlisted = {"supervisors": None, "supervisors_listed": None}
    assert {**got.as_dict(), **unlisted} == {**expected, **unlisted}


@pytest.mark.parametrize("query", QUERIES, ids=repr)
def test_the_listing_selects_what_the_rules_select(filled, query):
    expected = _in_python(filled, query).as_dict()
    got = status.judge(status.psycopg_reader(filled), query, listing=True)
    assert got.as_dict() == expected


@pytest.mark.parametrize(
    ("limit", "pids"),
    [
        (1, [12]),
        (3, [12, 13, 21]),
        (5, [11, 12, 13, 21, 22]),
        (0, [11, 12, 13, 21, 22, 31]),
    ],
)
def test_the_listing_holds_the_limit_problems_first(filled, limit, pids):
    read = status.psycopg_reader(filled)
    got = status.judge(read, health.FleetQuery(limit=limit), listing=True)
    assert [s.pid for s in got.supervisors] == pids
    assert got.total_supervisors == 6  # the stopped one (23) left out
    # the verdict is about all six, whatever the limit
    whole = status.judge(read, health.FleetQuery(limit=0), listing=True)
    assert (got.fresh_supervisors, got.fresh_children) == (
        whole.fresh_supervisors,
        whole.fresh_children,
    )
    assert (got.problems, got.warnings) == (whole.problems, whole.warnings)
    assert got.warnings and got.problems


def test_the_fixture_has_every_kind_of_verdict(filled):
    """The comparisons above see problems, warnings and both verdicts."""
    results = [_in_python(filled, q) for q in QUERIES]
    assert {r.healthy for r in results} == {True, False}
    assert any(r.warnings for r in results)
    assert any("crash loop" in p for r in results for p in r.problems)


def test_a_probe_reads_the_live_supervisors_it_asks_about_only(db):
    # many hosts' stopped processes (and their children), as before a prune
    db.execute(
        "INSERT INTO procrastinate_prefork_processes (kind, host, pid, state) "
        "SELECT 'supervisor', 'old-' || i, i, 'stopped' "
        "FROM generate_series(1, 3000) AS i"
    )
    db.execute(
        "INSERT INTO procrastinate_prefork_processes "
        "(kind, host, pid, supervisor_id, slot, state) "
        "SELECT 'child', host, pid * 10 + c, id, c, 'stopped' "
        "FROM procrastinate_prefork_processes, generate_series(0, 3) AS c"
    )
    _fill(db)
    db.execute("ANALYZE procrastinate_prefork_processes")
    read = status.psycopg_reader(db)
    plans = Plans(db)
    for query in (health.FleetQuery(), health.FleetQuery(host="h1")):
        result = status.judge(read, query, listing=False)
        assert result.fresh_supervisors >= 1
    # a listing selected by host or queue (the whole listing's cost is the
    # size of its answer: it reads the table)
    for query in (health.FleetQuery(host="h1"), health.FleetQuery(queue="b")):
        assert status.judge(read, query, listing=True).supervisors
    scans = [t for t in plans.texts if "Seq Scan on procrastinate_prefork_proc" in t]
    assert scans == []
    assert plans.walks(1000) == []
    # without live_only: every row, stopped ones too
    count = db.execute("SELECT count(*) FROM procrastinate_prefork_processes")
    assert len(fleet.fetch_fleet(db)) == count.fetchone()[0] > 15_000  # type: ignore[index]


def test_schema_apply_adds_the_index_of_live_supervisors(db):
    name = "procrastinate_prefork_processes_live_idx"
    db.execute(f"DROP INDEX {name}")
    schema.apply(db)
    schema.apply(db)  # idempotent
    row = db.execute("SELECT to_regclass(%s)::text", [name]).fetchone()
    assert row == (name,)


def test_a_limited_listing_reads_the_listed_children_only(db):
    """1,000 live supervisors x 16 children: the listing reads the live
    supervisors (through their index) to pick the problems, and the children
    of the listed ones only (through the slot index)."""
    db.execute(
        "INSERT INTO procrastinate_prefork_processes (kind, host, pid, state, "
        "stalled_timeout) SELECT 'supervisor', 'host-' || i, i, "
        "CASE WHEN i % 7 = 0 THEN 'stopped' ELSE 'running' END, 86400 "
        "FROM generate_series(1, 1000) AS i"
    )
    db.execute(
        "INSERT INTO procrastinate_prefork_processes "
        "(kind, host, pid, supervisor_id, slot, state) "
        "SELECT 'child', host, pid * 100 + c, id, c, "
        "CASE WHEN state = 'stopped' THEN 'stopped' ELSE 'idle' END "
        "FROM procrastinate_prefork_processes, generate_series(0, 15) AS c"
    )
    db.execute("ANALYZE procrastinate_prefork_processes")
    read = status.psycopg_reader(db)
    plans = Plans(db)
    result = status.judge(read, health.FleetQuery(limit=20), listing=True)
    assert len(result.supervisors) == 20 and result.total_supervisors == 858
    [listing] = [t for t in plans.texts if "Limit" in t and "slot_idx" in t]
    assert "Seq Scan" not in listing
    # rows read through the slot index: the listed supervisors' children
    read_children = sum(
        int(rows) * int(loops)
        for rows, loops in re.findall(
            r"Scan on procrastinate_prefork_processes_slot_idx\b.*"
            r"actual rows=(\d+) loops=(\d+)",
            listing,
        )
    )
    assert read_children == 20 * 16
    # nothing read only to be filtered out, the stopped rows above all
    assert not re.findall(r"Rows Removed by Filter: \d{4,}", listing)
