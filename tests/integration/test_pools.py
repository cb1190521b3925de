"""Several pools under one supervisor (issue 24), with real processes.

The pools are given as the Django setting gives them (``tests.pools_main``,
``$PREFORK_TEST_POOLS``), or by ``--pool`` where the test says so: a cpu
pool of 2 children for the queue ``cpu``, an io pool of 1 child running 10
jobs at once for the queue ``io``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from .. import fleet_helper
from ..fleet_helper import APP, REPO, free_port, http_status, jobs, wait_for

POOLS = {
    "cpu": {"queues": ["cpu"], "concurrency": 2},
    "io": {"queues": ["io"], "concurrency": 1, "child_concurrency": 10},
}


def start(fleet, *args: str, pools: dict[str, Any] = POOLS, **kwargs: Any):
    # no polling to speak of: a job starts because a notification woke its pool
    pools = {
        name: {"fetch_job_polling_interval": 30, **options}
        for name, options in pools.items()
    }
    env = {"PREFORK_TEST_POOLS": json.dumps(pools), **kwargs.pop("env", {})}
    command = [sys.executable, "-m", "tests.pools_main", "--app", APP, "worker"]
    command += args
    return fleet.start(command=command, env=env, **kwargs)


def defer(db_url: str, queue: str, task: str, count: int = 1, **kwargs: Any):
    return fleet_helper.defer(db_url, task, count, queue=queue, **kwargs)


def pools_of_children(fleet) -> dict[str, set[int]]:
    """pid sets by pool, from the child_started events."""
    pools: dict[str, set[int]] = {}
    for event in fleet.events("child_started"):
        pools.setdefault(event["pool"], set()).add(event["pid"])
    return pools


def assert_routed(fleet, by_pool, cpu_ids: list[int], io_ids: list[int]) -> None:
    """The cpu jobs ran in the cpu pool's children only, the io jobs in the io
    pool's, at least 5 of them at once."""
    ran_by = {job_id: pid for job_id, _, pid in fleet.marks("end")}
    assert {ran_by[i] for i in cpu_ids} <= by_pool["cpu"]
    assert {ran_by[i] for i in io_ids} <= by_pool["io"]
    assert overlap(fleet, io_ids) >= 5


def overlap(fleet, job_ids: list[int]) -> int:
    """The most of these jobs that ran at once (their first runs): a job
    started before another ended."""
    starts, ends = fleet.mark_times("start"), fleet.mark_times("end")
    runs = [(starts[(i, 0)], ends[(i, 0)]) for i in job_ids]
    return max(sum(1 for start, end in runs if start <= t < end) for t, _ in runs)


def status_json(fleet, *args: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "procrastinate_prefork.cli", "--app", APP]
    out = subprocess.run(
        [*command, "status", "--json", *args],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": fleet.db_url, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(out.stdout)


#: the pools of POOLS as command-line flags
POOL_FLAGS = ("--pool", "cpu=cpu:2", "--pool", "io=io:1:10")


@pytest.mark.parametrize("form", ["setting", "flag"])
def test_each_pool_runs_its_own_queues(fleet, db_url, form):
    if form == "setting":
        start(fleet)
    else:
        command = [sys.executable, "-m", "procrastinate_prefork.cli", "--app", APP]
        command += ["worker", *POOL_FLAGS]
        fleet.start(command=command)
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
    assert_routed(fleet, by_pool, cpu_ids, io_ids)
    # the whole fleet, and a listing selected in the database (by queue)
    for selection in ((), ("--queue", "io")):
        [supervisor] = status_json(fleet, *selection)["supervisors"]
        assert [p["name"] for p in supervisor["pools"]] == ["cpu", "io"], selection
        children_pools = sorted(c["pool"] for c in supervisor["children"])
        assert children_pools == ["cpu", "cpu", "io"], selection
    assert fleet.stop() == 0


def test_a_child_killed_in_either_pool_has_its_jobs_run_again(fleet, db_url):
    start(fleet)
    fleet.wait_children(3)
    [cpu_job] = defer(db_url, "cpu", "sleep", seconds=30)
    [io_job] = defer(db_url, "io", "async_sleep", seconds=30)
    by_pool = pools_of_children(fleet)
    for job_id, pool in ((cpu_job, "cpu"), (io_job, "io")):
        victim = fleet.running_child(job_id)
        assert victim in by_pool[pool]
        os.kill(victim, signal.SIGKILL)
        # run again at once (attempt 1), by a child of the same pool
        again = fleet.running_child(job_id, attempt=1)
        by_pool = pools_of_children(fleet)
        assert again != victim and again in by_pool[pool], (again, by_pool)
    recovered = {e["job_id"] for e in fleet.events("job_recovered")}
    assert {cpu_job, io_job} <= recovered
    fleet.stop()


def test_a_pool_in_a_crash_loop_does_not_stop_the_others(fleet, db_url):
    port = free_port()
    start(
        fleet,
        "--on-child-start",
        "tests.apps.plain_app.crash_after_first_pool",
        "--health-port",
        str(port),
        wait_ready=False,
    )
    wait_for(
        lambda: any(e["pool"] == "io" for e in fleet.events("crash_loop")),
        timeout=30,
        message="the io pool's crash loop",
    )
    assert not fleet.exited(), fleet.log()
    ids = defer(db_url, "cpu", "cpu", count=10, ms=10)
    wait_for(
        lambda: {r["status"] for r in jobs(db_url, ids)} == {"succeeded"},
        timeout=30,
        message="the cpu pool to run its jobs",
    )
    assert [e["pool"] for e in fleet.events("pool_ready")] == ["cpu"]
    # not ready (a pool lacks its children), but alive: a restart would stop
    # the cpu pool too
    assert http_status(port, "/ready", timeout=5) == 503
    assert http_status(port, "/live", timeout=5) == 200
    assert not fleet.events("fleet_ready")
    assert {e["pool"] for e in fleet.events("crash_loop")} == {"io"}
    fleet.stop()


def test_a_notification_on_a_queue_wakes_only_its_pool(fleet, db_url):
    start(fleet, "--log-level", "debug")
    fleet.wait_children(3)
    by_pool = pools_of_children(fleet)
    # the wake-ups of the start (every pool, after the forks) are past
    wait_for(
        lambda: {e["pool"] for e in fleet.events("wake_forwarded")} >= {"cpu", "io"},
        message="the wake-ups of the start",
    )
    seen = len(fleet.events("wake_forwarded"))
    defer(db_url, "io", "async_sleep", seconds=0.1)
    # polling every 30 s: the io child runs it only if its pipe woke it
    wait_for(lambda: fleet.marks("end"), timeout=10, message="the io job to run")
    woken = fleet.events("wake_forwarded")[seen:]
    assert woken and {e["pool"] for e in woken} == {"io"}, woken
    assert {pid for e in woken for pid in e["pids"]} == by_pool["io"]
    [(_, _, ran_in)] = fleet.marks("end")
    assert ran_in in by_pool["io"]
    fleet.stop()


def test_ttin_steps_every_pool_and_hup_rolls_every_pool(fleet, db_url):
    start(fleet)
    fleet.wait_children(3)
    fleet.signal(signal.SIGTTIN)
    before = set(fleet.wait_children(5))
    ups = {e["pool"]: e["children"] for e in fleet.events("scale_up")}
    assert ups == {"cpu": 3, "io": 2}
    fleet.signal(signal.SIGHUP)
    wait_for(
        lambda: {e["pool"] for e in fleet.events("rolling_restart")} == {"cpu", "io"},
        message="both pools to roll over",
    )
    wait_for(
        lambda: len(fleet.child_pids()) == 5 and not set(fleet.child_pids()) & before,
        timeout=40,
        message="every child replaced",
    )
    fleet.stop()


def test_each_pool_autoscales_on_its_own_queues(fleet, db_url):
    pools = {
        "cpu": {
            "queues": ["cpu"],
            "autoscale": [1, 3],
            "autoscale_cooldown": 1,
        },
        "io": {"queues": ["io"], "concurrency": 1, "child_concurrency": 2},
    }
    start(fleet, pools=pools)
    fleet.wait_children(2)
    # a backlog on io (2 at once, 8 of 1 s: 4 s, autoscale looks every second)
    # is not the cpu pool's: it does not grow, nor does the fixed io pool
    io_ids = defer(db_url, "io", "async_sleep", count=8, seconds=1)
    wait_for(
        lambda: {r["status"] for r in jobs(db_url, io_ids)} == {"succeeded"},
        timeout=60,
        message="the io backlog to drain",
    )
    assert not fleet.events("scale_up")
    cpu_ids = defer(db_url, "cpu", "sleep", count=12, seconds=0.5)
    fleet.wait_children(4, timeout=20)
    wait_for(
        lambda: {r["status"] for r in jobs(db_url, cpu_ids)} == {"succeeded"},
        timeout=60,
        message="the cpu backlog to drain",
    )
    ups = fleet.events("scale_up")
    assert {e["pool"] for e in ups} == {"cpu"}
    assert max(e["children"] for e in ups) == 3
    fleet.stop()


def test_each_pool_has_its_own_time_limit(fleet, db_url):
    pools = {
        "cpu": {"queues": ["cpu"], "concurrency": 1, "job_timeout": 1.0},
        "io": {"queues": ["io"], "concurrency": 1, "child_concurrency": 2},
    }
    start(fleet, pools=pools)
    fleet.wait_children(2)
    [slow_cpu] = defer(db_url, "cpu", "sleep", seconds=4)
    [slow_io] = defer(db_url, "io", "async_sleep", seconds=4)
    wait_for(
        lambda: (
            {r["status"] for r in jobs(db_url, [slow_cpu, slow_io])}
            == {"failed", "succeeded"}
        ),
        timeout=30,
        message="both jobs to end",
    )
    status = {r["id"]: r["status"] for r in jobs(db_url, [slow_cpu, slow_io])}
    assert status == {slow_cpu: "failed", slow_io: "succeeded"}
    assert [e["job_id"] for e in fleet.events("time_limit")] == [slow_cpu]
    fleet.stop()
