"""The health rules, as pure functions (procrastinate_prefork.fleet.health)."""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

import pytest

from procrastinate_prefork.fleet import health, status
from procrastinate_prefork.fleet.health import (
    FleetQuery,
    QueryError,
    liveness,
    readiness,
    supervisor_report,
)
from procrastinate_prefork.fleet.snapshot import ChildSnapshot as ChildFacts
from procrastinate_prefork.fleet.snapshot import FleetSnapshot as SupervisorFacts
from procrastinate_prefork.fleet.snapshot import from_rows

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def sup(
    id=1,
    host="h1",
    age=1.0,
    crash_loop=False,
    queues=None,
    state="running",
    stalled_timeout=30.0,
    **extra,
):
    return {
        "kind": "supervisor",
        "id": id,
        "host": host,
        "pid": 100 + id,
        "supervisor_id": None,
        "state": state,
        "crash_loop": crash_loop,
        "queues": queues,
        "concurrency": 2,
        "heartbeat_age": age,
        "stalled_timeout": stalled_timeout,
        "started_at": NOW,
        "last_heartbeat": NOW,
        "uptime": 10.0,
        "restarts": 0,
        **extra,
    }


def child(sup_id=1, slot=0, state="idle", age=0.5, **extra):
    return {
        "kind": "child",
        "id": 100 * sup_id + slot,
        "host": "h1",
        "pid": 1000 * sup_id + slot,
        "supervisor_id": sup_id,
        "slot": slot,
        "state": state,
        "heartbeat_age": age,
        "job_id": None,
        "task_name": None,
        "jobs_done": 3,
        "restarts": 0,
        "rss_bytes": 1 << 20,
        "started_at": NOW,
        "last_heartbeat": NOW,
        "uptime": 9.0,
        "job_age": None,
        **extra,
    }


def fleet_health(rows, query=None):
    """The verdict on fleet table rows, read as the status views read them."""
    return health.fleet_health(from_rows(rows), query)


# ------------------------------------------------------------------ fleet


def test_healthy_fleet():
    result = fleet_health([sup(), child(slot=0), child(slot=1, state="busy")])
    assert result.healthy and result.status == "healthy"
    assert result.problems == ()
    assert result.fresh_supervisors == 1 and result.fresh_children == 2
    [entry] = result.supervisors
    assert [health.counts(entry, c) for c in entry.children] == [True, True]


def test_no_rows_is_unhealthy():
    result = fleet_health([])
    assert not result.healthy
    assert result.problems[0] == "no fresh supervisor"


def test_stale_supervisor_is_unhealthy():
    result = fleet_health([sup(age=31.0), child(age=31.0)])
    assert not result.healthy
    assert "no fresh supervisor" in result.problems
    assert result.fresh_children == 0  # its children do not count either
    assert result.warnings and "31 s" in result.warnings[0]


def test_freshness_uses_the_supervisor_stalled_timeout():
    assert fleet_health([sup(age=4.0, stalled_timeout=5.0), child()]).healthy
    assert not fleet_health([sup(age=6.0, stalled_timeout=5.0), child()]).healthy
    # a row that does not say falls back to the default
    assert fleet_health([sup(age=29.0, stalled_timeout=None), child()]).healthy
    assert not fleet_health([sup(age=31.0, stalled_timeout=None), child()]).healthy


def test_child_freshness_uses_its_supervisor_threshold():
    result = fleet_health([sup(stalled_timeout=5.0), child(age=6.0), child(slot=1)])
    assert result.fresh_children == 1


def test_fewer_fresh_children_than_min_children():
    rows = [
        sup(),
        child(slot=0),
        child(slot=1, state="starting"),
        child(slot=2, state="draining"),
    ]
    assert fleet_health(rows).healthy
    result = fleet_health(rows, FleetQuery(min_children=2))
    assert not result.healthy
    assert result.problems == ("1 fresh child(ren), fewer than min_children=2",)
    assert fleet_health(rows, FleetQuery(min_children=0)).healthy


def test_supervisor_with_no_children_is_unhealthy_by_default():
    assert not fleet_health([sup()]).healthy
    assert fleet_health([sup()], FleetQuery(min_children=0)).healthy


def test_crash_loop_is_unhealthy():
    result = fleet_health([sup(crash_loop=True), child()])
    assert not result.healthy
    assert result.problems == ("supervisor pid 101 on h1 is in a crash loop",)


def test_stale_crash_looping_supervisor_next_to_a_fresh_one():
    rows = [sup(id=1, crash_loop=True, age=100), sup(id=2, host="h2"), child(sup_id=2)]
    result = fleet_health(rows)
    assert result.healthy, result.problems
    assert len(result.warnings) == 1


def test_stopped_rows_are_left_out():
    rows = [
        sup(id=1, state="stopped"),
        child(sup_id=1, state="stopped"),
        sup(id=2),
        child(sup_id=2, slot=0),
        child(sup_id=2, slot=1, state="stopped"),
    ]
    result = fleet_health(rows)
    assert [s.id for s in result.supervisors] == [2]
    assert [c.slot for c in result.supervisors[0].children] == [0]


def test_host_filter():
    rows = [sup(id=1, host="a"), child(sup_id=1), sup(id=2, host="b", age=99)]
    assert fleet_health(rows, FleetQuery(host="a")).healthy
    result = fleet_health(rows, FleetQuery(host="b"))
    assert not result.healthy
    assert result.problems[0] == "no fresh supervisor (host=b)"
    assert not fleet_health(rows, FleetQuery(host="c")).healthy


def test_queue_filter():
    rows = [
        sup(id=1, queues=["mail"]),
        child(sup_id=1),
        sup(id=2, queues=None, age=99),
        child(sup_id=2),
    ]
    # supervisor 2 works on all queues (but is stale)
    assert fleet_health(rows, FleetQuery(queue="mail")).healthy
    result = fleet_health(rows, FleetQuery(queue="reports"))
    assert not result.healthy
    assert [s.id for s in result.supervisors] == [2]


def test_output_is_whitelisted_and_json_ready():
    rows = [
        sup(secret="postgresql://u:pw@x/db"),
        child(job_id=7, task_name="t", job_age=1.23456, args={"password": "x"}),
    ]
    document = fleet_health(rows).as_dict()
    text = json.dumps(document)
    assert "pw@" not in text and "password" not in text
    entry = document["supervisors"][0]
    assert entry["started_at"] == NOW.isoformat()
    assert entry["children"][0]["job_age"] == 1.235
    assert document["status"] == "healthy" and document["min_children"] == 1


#: A fleet as the query ``fleet_rows`` gives it: every kind of row the views show.
PIN_ROWS = [
    sup(
        id=1,
        queues=["a", "b"],
        heartbeat_interval=5.0,
        rss_bytes=123456789,
        restarts=0,
        age=0.25,
        uptime=3700.5,
    ),
    child(slot=0, worker_id=501, age=-0.0004, uptime=12.34567),
    child(
        slot=1,
        state="busy",
        worker_id=502,
        job_id=7,
        task_name="t",
        job_age=59.99996,
        rss_bytes=None,
        restarts=2,
    ),
    child(slot=2, state="stopped"),
    child(slot=3, state="starting", age=0.1),
    sup(id=2, host="h2", age=100.7, crash_loop=True, stalled_timeout=None),
    child(sup_id=2, slot=0, age=100.6, jobs_done=0),
    sup(id=3, host="h3", state="stopped"),
    child(sup_id=3, slot=0),
]
GOLDEN = Path(__file__).with_name("fleet_document.json")
PIN_TABLE = Path(__file__).with_name("fleet_table.txt").read_text()


def test_document_table_and_line_are_pinned():
    """The health view's and ``status --json``'s document, field for field and
    in order, the table and the one-line check: what scripts and dashboards
    read must not move."""
    result = fleet_health(PIN_ROWS)
    assert json.dumps(result.as_dict(), indent=2) + "\n" == GOLDEN.read_text()
    assert status.render_table(result) == PIN_TABLE
    assert status.one_line(result) == "healthy: 1 supervisor(s), 2 child(ren)"
    unhealthy = fleet_health(PIN_ROWS, FleetQuery(min_children=3))
    assert status.one_line(unhealthy) == (
        "unhealthy: 2 fresh child(ren), fewer than min_children=3"
    )
    empty = status.render_table(fleet_health([]))
    assert empty.splitlines()[:2] == [
        "HOST  PID  SLOT  STATE  QUEUES  JOB  UPTIME  HEARTBEAT  AS OF  JOBS DONE"
        "  MEMORY",
        "(no supervisor in the fleet table)",
    ]


def test_rows_are_read_into_snapshots():
    rows = [
        sup(id=1, queues=["a"], heartbeat_interval=5.0, rss_bytes=7),
        child(slot=0, worker_id=9, job_id=4, task_name="t", job_age=2.0),
        child(slot=1, state="stopped"),
        child(sup_id=5, slot=0),  # its supervisor is not among the rows
        sup(id=2, host="h2", state="stopped", stalled_timeout=None),
    ]
    first, second = from_rows(rows)
    assert (first.id, first.host, first.pid, first.phase) == (1, "h1", 101, "running")
    assert (first.queues, first.concurrency, first.crash_looping) == (("a",), 2, False)
    assert (first.heartbeat_interval, first.stalled_timeout) == (5.0, 30.0)
    assert (first.rss_bytes, first.heartbeat_age, first.uptime) == (7, 1.0, 10.0)
    assert first.started_at == first.last_heartbeat == NOW
    job, stopped = first.children
    assert (job.slot, job.pid, job.worker_id, job.state) == (0, 1000, 9, "idle")
    assert (job.job_id, job.task_name, job.job_age) == (4, "t", 2.0)
    assert (job.jobs_done, job.rss_bytes, job.heartbeat_age) == (3, 1 << 20, 0.5)
    assert (job.started_at, job.last_heartbeat, job.uptime) == (NOW, NOW, 9.0)
    assert stopped.state == "stopped"  # read as it is: judging is fleet_health's
    assert (second.id, second.phase, second.children) == (2, "stopped", ())
    assert second.stalled_timeout is None and second.queues is None
    # the table records no child timeout: no child of a row is judged wedged
    assert first.fresh_worker_ids() == [9]


# ------------------------------------------------------------------ query


def test_query_from_params():
    query = FleetQuery.from_params({"host": ["a"], "queue": "q", "min_children": "3"})
    assert query == FleetQuery(host="a", queue="q", min_children=3)
    assert FleetQuery.from_params({}) == FleetQuery()
    assert FleetQuery().limit == health.DEFAULT_LIMIT
    assert FleetQuery.from_params({"limit": ["0"]}).limit == 0
    assert FleetQuery.build(limit=str(health.MAX_LIMIT)).limit == health.MAX_LIMIT


def test_the_listing_holds_the_limit_problems_first():
    rows = [
        sup(id=1, host="a"),
        child(sup_id=1),
        sup(id=2, host="b", crash_loop=True),
        child(sup_id=2),
        sup(id=3, host="c"),
        child(sup_id=3),
        sup(id=4, host="d", age=31.0),  # stale
        child(sup_id=4),
    ]
    result = fleet_health(rows, FleetQuery(limit=3))
    assert [s.host for s in result.supervisors] == ["a", "b", "d"]
    assert result.total_supervisors == 4
    assert result.as_dict()["supervisors_listed"] == 3
    assert (result.fresh_supervisors, result.fresh_children) == (3, 3)
    table = status.render_table(result)
    listed = table.split("\n\n")[0].splitlines()[1:]
    assert [line.split()[0] for line in listed if line[:1] not in " ("] == list("abd")
    assert table.count("\n(") == 1  # how many are not listed, and how to see them
    whole = fleet_health(rows, FleetQuery(limit=0))
    assert len(whole.supervisors) == 4
    assert "\n(" not in status.render_table(whole)


@pytest.mark.parametrize(
    "params",
    [
        {"min_children": "x"},
        {"min_children": "-1"},
        {"min_children": "1000001"},
        {"min_children": ["1", "2"]},
        {"host": ""},
        {"queue": "a" * 300},
        {"host": "a\nb"},
        {"hots": "a"},
        {"limit": "-1"},
        {"limit": "x"},
        {"limit": str(health.MAX_LIMIT + 1)},
        {"limit": ["1", "2"]},
    ],
)
def test_bad_query(params):
    [name] = params
    with pytest.raises(QueryError, match=name):  # names the parameter at fault
        FleetQuery.from_params(params)


# ------------------------------------------------------------ supervisor


def facts(children=None, **changes):
    base = dict(
        host="h",
        pid=1,
        phase="running",
        concurrency=2,
        crash_looping=False,
        database_up=True,
        child_timeout=60.0,
        children=[
            ChildFacts(slot=0, pid=10, state="idle", heartbeat_age=0.1),
            ChildFacts(
                slot=1,
                pid=11,
                state="busy",
                heartbeat_age=0.2,
                job_id=5,
                task_name="t",
                job_age=1.0,
            ),
        ]
        if children is None
        else children,
    )
    base.update(changes)
    return SupervisorFacts(**base)


def test_live_and_ready():
    assert liveness(facts()).ok
    assert readiness(facts()).ok


def test_not_ready_while_a_child_boots():
    children = [
        ChildFacts(slot=0, pid=10, state="idle", heartbeat_age=0.1),
        ChildFacts(slot=1, pid=11, state="starting", heartbeat_age=2.0),
    ]
    verdict = readiness(facts(children))
    assert not verdict.ok and verdict.reasons == ("1 of 2 child(ren) ready",)
    assert liveness(facts(children)).ok


def test_not_ready_with_a_missing_child():
    verdict = readiness(facts(facts().children[:1]))
    assert not verdict.ok


def test_not_ready_without_database():
    verdict = readiness(facts(database_up=False))
    assert verdict.reasons == ("database unreachable",)
    assert liveness(facts(database_up=False)).ok  # a restart would not help


def test_not_ready_while_draining():
    assert readiness(facts(phase="draining")).reasons == ("supervisor is draining",)
    assert liveness(facts(phase="draining")).ok


def test_one_wedged_child_does_not_fail_liveness():
    children = [
        ChildFacts(slot=0, pid=10, state="busy", heartbeat_age=61.0),
        ChildFacts(slot=1, pid=11, state="idle", heartbeat_age=0.1),
    ]
    assert liveness(facts(children)).ok


def test_all_children_wedged_fails_liveness():
    children = [
        ChildFacts(slot=0, pid=10, state="busy", heartbeat_age=61.0),
        ChildFacts(slot=1, pid=11, state="busy", heartbeat_age=75.0),
    ]
    verdict = liveness(facts(children))
    assert not verdict.ok and "wedged" in verdict.reasons[0]


def test_crash_loop_fails_liveness():
    verdict = liveness(facts(crash_looping=True, children=[]))
    assert not verdict.ok and "crash loop" in verdict.reasons[0]


def test_supervisor_report():
    report = supervisor_report(facts(queues=("a", "b")))
    assert report["live"] and report["ready"] and report["reasons"] == []
    assert report["queues"] == ["a", "b"]
    assert [c["slot"] for c in report["children"]] == [0, 1]
    assert report["children"][1]["job_id"] == 5
    assert set(report["children"][0]) == {
        "slot",
        "pid",
        "state",
        "job_id",
        "task_name",
        "job_age",
        "jobs_done",
        "restarts",
        "rss_bytes",
        "heartbeat_age",
        "uptime",
        "pool",
    }
    # a fleet without pools: one pool, named default, of all its children
    [pool] = report["pools"]
    assert (pool["name"], pool["queues"], pool["ready_children"]) == (
        "default",
        ["a", "b"],
        2,
    )
    json.dumps(report)


def pooled(children, cpu_looping=False):
    from procrastinate_prefork.fleet.snapshot import PoolSnapshot

    return facts(
        children,
        concurrency=3,
        crash_looping=cpu_looping,
        pools=(
            PoolSnapshot("cpu", ("cpu",), 2, crash_looping=cpu_looping),
            PoolSnapshot("io", ("io",), 1),
        ),
    )


def test_ready_when_every_pool_has_its_children():
    cpu = [
        ChildFacts(slot=s, pid=s, state="idle", heartbeat_age=0.1, pool="cpu")
        for s in (0, 1)
    ]
    io = ChildFacts(slot=1024, pid=9, state="busy", heartbeat_age=0.1, pool="io")
    assert readiness(pooled([*cpu, io])).ok
    # three children ready, all of the cpu pool: io has none
    extra = ChildFacts(slot=2, pid=2, state="idle", heartbeat_age=0.1, pool="cpu")
    verdict = readiness(pooled([*cpu, extra]))
    assert not verdict.ok and "pool io" in verdict.reasons[0]
    report = supervisor_report(pooled([*cpu, io]))
    assert [(p["name"], p["ready_children"]) for p in report["pools"]] == [
        ("cpu", 2),
        ("io", 1),
    ]


def test_one_pool_s_crash_loop_fails_readiness_not_liveness():
    io = ChildFacts(slot=1024, pid=9, state="idle", heartbeat_age=0.1, pool="io")
    facts_ = pooled([io], cpu_looping=True)
    # a restart would stop the io pool too, which runs its jobs
    assert liveness(facts_).ok
    verdict = readiness(facts_)
    assert not verdict.ok and "crash loop in pool cpu" in verdict.reasons
    every = dataclasses.replace(
        facts_,
        pools=[dataclasses.replace(p, crash_looping=True) for p in facts_.pools],
    )
    assert not liveness(every).ok


def test_module_is_pure():
    import ast

    from procrastinate_prefork.fleet import verdicts

    imported = set()
    tree = ast.Module(body=[], type_ignores=[])
    for module in (health, verdicts):
        with open(module.__file__) as source:
            tree.body.extend(ast.parse(source.read()).body)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # the last part: a sibling module is named by its own name
            imported.add((node.module or "").split(".")[-1])
    assert imported <= {
        "abc",
        "__future__",
        "dataclasses",
        "datetime",
        "collections",
        "typing",
        "policy",
        "snapshot",
        "verdicts",
    }  # the package's pure modules


def test_rows_of_several_pools_are_shown_and_counted_by_pool():
    pools = [
        {"name": "cpu", "queues": ["cpu"], "concurrency": 1, "crash_loop": False},
        {"name": "io", "queues": ["io", "mail"], "concurrency": 1, "crash_loop": False},
    ]
    rows = [
        sup(queues=["cpu", "io", "mail"], pools=json.dumps(pools)),
        child(slot=0, pool="cpu"),
        child(slot=1024, state="starting", pool="io"),
    ]
    result = fleet_health(rows)
    [entry] = result.as_dict()["supervisors"]
    assert [c["pool"] for c in entry["children"]] == ["cpu", "io"]
    assert [(p["name"], p["fresh_children"]) for p in entry["pools"]] == [
        ("cpu", 1),
        ("io", 0),
    ]
    table = status.render_table(result).splitlines()
    assert "cpu: cpu" in table[2] and "io: io,mail" in table[3]
    # rows written before pools: one pool, default, of the supervisor's own
    [old] = fleet_health([sup(queues=["a"]), child()]).as_dict()["supervisors"]
    assert old["children"][0]["pool"] == "default"
    assert [(p["name"], p["queues"]) for p in old["pools"]] == [("default", ["a"])]
