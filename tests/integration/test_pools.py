"""Several pools under one supervisor (issue 24), with real processes.

The pools are given by ``tests.pools_main`` (``$PREFORK_TEST_POOLS``): a cpu
pool of 2 children for the queue ``cpu``, an io pool of 1 child running 10
jobs at once for the queue ``io``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import psycopg

from ..fleet_helper import REPO, APP, jobs, wait_for

POOLS = {
    "cpu": {"queues": ["cpu"], "concurrency": 2},
    "io": {"queues": ["io"], "concurrency": 1, "child_concurrency": 10},
}


def start(fleet, *args: str, pools: dict[str, Any] = POOLS, **kwargs: Any):
    env = {"PREFORK_TEST_POOLS": json.dumps(pools), **kwargs.pop("env", {})}
    command = [sys.executable, "-m", "tests.pools_main", "--app", APP, "worker"]
    command += ["--fetch-job-polling-interval", "30", *args]
    return fleet.start(command=command, env=env, **kwargs)


def defer(db_url: str, queue: str, task: str, count: int = 1, **kwargs: Any):
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT procrastinate_defer_jobs_v1(array_agg(ROW("
            "  %s, %s, 0, NULL, NULL, %s::jsonb, NULL"
            ")::procrastinate_job_to_defer_v1)) FROM generate_series(1, %s)",
            [queue, task, json.dumps(kwargs), count],
        ).fetchone()
    assert row is not None
    return list(row[0])


def pools_of_children(fleet) -> dict[str, set[int]]:
    """pid sets by pool, from the child_started events."""
    pools: dict[str, set[int]] = {}
    for event in fleet.events("child_started"):
        pools.setdefault(event["pool"], set()).add(event["pid"])
    return pools


def status_json(fleet) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "procrastinate_prefork.cli", "--app", APP]
        + ["status", "--json"],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": fleet.db_url, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def test_each_pool_runs_its_own_queues(fleet, db_url):
    start(fleet)
    fleet.wait_children(3)
    by_pool = pools_of_children(fleet)
    assert len(by_pool["cpu"]) == 2 and len(by_pool["io"]) == 1, by_pool
    cpu_ids = defer(db_url, "cpu", "cpu", count=20, ms=20)
    io_ids = defer(db_url, "io", "async_sleep", count=10, seconds=1.5)
    wait_for(
        lambda: {r["status"] for r in jobs(db_url, cpu_ids + io_ids)} == {"succeeded"},
        timeout=60,
        message="every job to succeed",
    )
    ran_by = {job_id: pid for job_id, _, pid in fleet.marks("end")}
    assert {ran_by[i] for i in cpu_ids} <= by_pool["cpu"]
    assert {ran_by[i] for i in io_ids} <= by_pool["io"]
    # at least 5 io jobs ran at once in the one io child: ends and starts
    # overlap (a job started before another ended)
    starts, ends = fleet.mark_times("start"), fleet.mark_times("end")
    io_runs = [(starts[(i, 0)], ends[(i, 0)]) for i in io_ids]
    overlapping = max(
        sum(1 for start_, end in io_runs if start_ <= t < end) for t, _ in io_runs
    )
    assert overlapping >= 5, io_runs
    document = status_json(fleet)
    [supervisor] = document["supervisors"]
    assert [p["name"] for p in supervisor["pools"]] == ["cpu", "io"]
    children_pools = sorted(c["pool"] for c in supervisor["children"])
    assert children_pools == ["cpu", "cpu", "io"]
    assert fleet.stop() == 0
