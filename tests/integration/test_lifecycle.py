"""Recycling, runtime scaling, rolling restarts, autoscale, titles, hooks."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import psycopg

from ..fleet_helper import defer, error_line, jobs, wait_for


def _ran_once_each(fleet, ids):
    starts = Counter(j for j, _, _ in fleet.marks("start"))
    return all(starts[i] == 1 for i in ids) and len(starts) == len(ids)


def test_recycle_after_n_jobs_loses_nothing(fleet, db_url):
    ids = defer(db_url, "cpu", count=60, ms=5)
    code = fleet.run_to_exit(
        "--concurrency",
        "2",
        "--max-jobs-per-child",
        "7",
        "--max-jobs-jitter",
        "3",
        "--one-shot",
        timeout=120,
    )
    assert code == 0, fleet.log()
    assert {r["status"] for r in jobs(db_url, ids)} == {"succeeded"}
    assert _ran_once_each(fleet, ids)
    per_pid = Counter(pid for _, _, pid in fleet.marks("end"))
    assert len(per_pid) >= 60 // 10  # at most 7 + 3 jobs per child
    assert max(per_pid.values()) <= 10
    assert fleet.events("child_recycle")


def test_recycle_on_memory(fleet, db_url):
    fleet.start("--concurrency", "1", "--max-memory-per-child", "150")
    first = fleet.wait_children(1)[0]
    ids = defer(db_url, "hog", count=4, mb=60)
    wait_for(
        lambda: all(r["status"] == "succeeded" for r in jobs(db_url, ids)),
        timeout=60,
        message="the hog jobs",
    )
    assert first in [e["pid"] for e in fleet.events("child_recycle")]
    pids = {pid for _, _, pid in fleet.marks("end")}
    assert first in pids and len(pids) >= 2
    assert _ran_once_each(fleet, ids)
    assert fleet.stop() == 0


def test_memory_limit_below_start_size_does_not_loop(fleet, db_url):
    fleet.start("--concurrency", "1", "--max-memory-per-child", "1")
    ids = defer(db_url, "cpu", count=10, ms=1)
    wait_for(
        lambda: all(r["status"] == "succeeded" for r in jobs(db_url, ids)),
        timeout=30,
        message="the jobs",
    )
    assert len({pid for _, _, pid in fleet.marks("end")}) == 1  # never recycled
    assert fleet.events("memory_limit_below_baseline")
    assert fleet.stop() == 0


def _fleet_children_in_table(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM procrastinate_prefork_processes "
            "WHERE kind = 'child' AND state <> 'stopped'"
        ).fetchone()[0]


def test_ttin_ttou_change_the_fleet(fleet, db_url):
    fleet.start("--concurrency", "2", "--heartbeat-interval", "0.5")
    fleet.wait_children(2)
    fleet.signal(signal.SIGTTIN)
    fleet.wait_children(3)
    wait_for(lambda: _fleet_children_in_table(db_url) == 3, message="3 rows")
    fleet.signal(signal.SIGTTOU)
    fleet.wait_children(2)  # (two signals sent at once would merge into one)
    fleet.signal(signal.SIGTTOU)
    fleet.wait_children(1)
    wait_for(lambda: _fleet_children_in_table(db_url) == 1, message="1 row")
    fleet.signal(signal.SIGTTOU)  # never below one
    time.sleep(1)  # lets time pass: to show that no child is retired
    assert len(fleet.child_pids()) == 1
    assert [e["children"] for e in fleet.events("scale_down")] == [2, 1]
    assert fleet.stop() == 0


def test_hup_replaces_every_child_while_jobs_flow(fleet, db_url):
    fleet.start("--concurrency", "2")
    old = set(fleet.wait_children(2))
    ids = defer(db_url, "cpu", count=150, ms=20)
    wait_for(lambda: len(fleet.marks("end")) >= 20, message="jobs flowing")
    fleet.signal(signal.SIGHUP)

    def replaced():
        pids = set(fleet.child_pids())
        return len(pids) == 2 and not (pids & old)

    wait_for(replaced, timeout=30, message="every child replaced")
    # never fewer than 2 ready children: the new ones started before the old left
    wait_for(
        lambda: all(r["status"] == "succeeded" for r in jobs(db_url, ids)),
        timeout=60,
        message="all jobs to succeed",
    )
    assert _ran_once_each(fleet, ids)
    assert fleet.events("rolling_restart")
    assert fleet.stop() == 0


def test_autoscale_grows_under_backlog_and_shrinks_when_idle(fleet, db_url):
    fleet.start("--autoscale", "1,3", "--autoscale-cooldown", "1")
    fleet.wait_children(1)
    ids = defer(db_url, "sleep", count=12, seconds=0.5)
    fleet.wait_children(3, timeout=20)
    wait_for(
        lambda: all(r["status"] == "succeeded" for r in jobs(db_url, ids)),
        timeout=60,
        message="backlog drained",
    )
    fleet.wait_children(1, timeout=30)
    # no signal was sent: autoscale did both
    assert max(e["children"] for e in fleet.events("scale_up")) == 3
    assert fleet.events("scale_down")
    assert fleet.stop() == 0


def test_process_titles(fleet, db_url):
    fleet.start("--concurrency", "1", "-q", "default")
    with open(f"/proc/{fleet.pid}/cmdline", "rb") as f:
        title = f.read().replace(b"\0", b" ").decode()
    assert "procrastinate-prefork supervisor" in title and "1 children" in title
    assert "default" in title
    [job_id] = defer(db_url, "sleep", seconds=2)
    child = fleet.busy_child()
    with open(f"/proc/{child}/cmdline", "rb") as f:
        title = f.read().replace(b"\0", b" ").decode()
    assert f"child 0 [busy job {job_id} sleep]" in title
    assert fleet.stop() == 0


def test_hooks(fleet, db_url):
    fleet.start(
        "--concurrency",
        "1",
        "--on-child-start",
        "tests.apps.plain_app.on_child_start",
        "--on-child-exit",
        "tests.apps.plain_app:on_child_exit",
    )
    [child] = fleet.wait_children(1)
    wait_for(
        lambda: (fleet.results / f"hook-start-{child}").exists(), message="start hook"
    )
    slot, parent = (fleet.results / f"hook-start-{child}").read_text().split()
    assert slot == "0" and int(parent) == fleet.pid
    os.kill(child, signal.SIGKILL)
    wait_for(
        lambda: (fleet.results / f"hook-exit-{child}").exists(), message="exit hook"
    )
    slot, code, signum, caller = (
        (fleet.results / f"hook-exit-{child}").read_text().split()
    )
    assert (slot, code, signum, int(caller)) == (
        "0",
        "None",
        str(int(signal.SIGKILL)),
        fleet.pid,
    )
    assert fleet.stop() == 0


def test_bad_hook_path_exits_2(fleet):
    code = fleet.run_to_exit("--on-child-start", "tests.apps.nope.hook", timeout=30)
    assert code == 2
    assert "--on-child-start" in error_line(fleet)
