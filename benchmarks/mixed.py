#!/usr/bin/env python
"""A mixed workload, CPU-heavy jobs on one queue and many sleeping I/O jobs on
another, run three ways:

* ``pools``: one prefork fleet with two pools,
  ``--pool cpu=cpu:2 --pool io=io:1:<io-concurrency>``;
* ``two_fleets``: two prefork fleets side by side, ``--queues cpu
  --concurrency 2`` and ``--queues io --concurrency 1 --child-concurrency
  <io-concurrency>``;
* ``stock``: stock procrastinate as its users run such a load: two
  ``procrastinate worker --queues cpu --concurrency 1`` and one
  ``procrastinate worker --queues io --concurrency <io-concurrency>``.

    .venv/bin/python benchmarks/mixed.py [--reps 3]     # DATABASE_URL set
    scripts/bench.sh --only mixed                       # a throwaway server

For each setup and repetition (interleaved), in a fresh database: the jobs
are inserted, then the workers start and drain them. Measured: the drain time
(first start to last end, from ``procrastinate_events``), the time from the
workers' start to the last end (start-up included), the peak of the database
sessions the workers hold (sampled every 0.2 s), and the memory (PSS: shared
pages counted once across the processes that share them) of every process of
the setup, read once half of the jobs are done. Writes
docs/benchmarks-mixed.json (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import harness
from benchmarks.work import calibrate

SETUPS = ("pools", "two_fleets", "stock")


class PoolFleet(harness.Workers):
    """A prefork fleet of pools: its command has ``--pool`` flags and no
    ``--concurrency`` (the two do not mix)."""

    def commands(self) -> list[tuple[list[str], dict[str, str]]]:
        [(command, env)] = super().commands()
        at = command.index("--concurrency")
        return [(command[:at] + command[at + 2 :], env)]


def workers_of(
    setup: str, url: str, work: Path, io_concurrency: int
) -> list[harness.Workers]:
    if setup == "pools":
        pools = ["--pool", "cpu=cpu:2", "--pool", f"io=io:1:{io_concurrency}"]
        return [PoolFleet("prefork", 3, url, work, pools)]
    if setup == "two_fleets":
        return [
            harness.Workers("prefork", 2, url, work, ["--queues", "cpu"]),
            harness.Workers(
                "prefork",
                1,
                url,
                work,
                ["--queues", "io", "--child-concurrency", str(io_concurrency)],
            ),
        ]
    return [
        harness.Workers("stock_procs", 2, url, work, ["--queues", "cpu"]),
        harness.Workers("stock", io_concurrency, url, work, ["--queues", "io"]),
    ]


def insert(conn: Any, queue: str, task: str, count: int, args: dict[str, Any]) -> None:
    """``count`` jobs in one statement, through procrastinate's defer function."""
    conn.execute(
        "SELECT procrastinate_defer_jobs_v1(array_agg(ROW("
        "  %s, %s, 0, NULL, NULL, %s::jsonb, NULL"
        ")::procrastinate_job_to_defer_v1)) FROM generate_series(1, %s)",
        [queue, task, json.dumps(args), count],
    )


def total_pss(groups: list[harness.Workers]) -> float:
    mib = 1024 * 1024
    total = 0.0
    for workers in groups:
        for pid in workers.all_pids():
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).memory_full_info().pss / mib
    return round(total, 1)


def measure(
    setup: str, args: argparse.Namespace, iterations: int, dbs: harness.Databases
) -> dict[str, Any]:
    work = harness.workdir()
    jobs = args.cpu_jobs + args.io_jobs
    with dbs.fresh() as url, harness.connect(url) as conn:
        insert(conn, "cpu", "cpu", args.cpu_jobs, {"iterations": iterations})
        insert(conn, "io", "sleep_async", args.io_jobs, {"ms": args.io_ms})
        groups = workers_of(setup, url, work, args.io_concurrency)
        started = time.monotonic()
        for workers in groups:
            workers.start()
        peak_sessions, pss = 0, 0.0
        try:
            deadline = started + 600
            while True:
                for workers in groups:
                    workers.check_alive()
                left = harness.unfinished(conn)
                peak_sessions = max(peak_sessions, sum(harness.sessions(conn).values()))
                if not pss and left <= jobs / 2:
                    pss = total_pss(groups)
                if not left:
                    break
                if time.monotonic() > deadline:
                    raise harness.BenchError(f"{setup}: not drained in 600 s")
                time.sleep(0.2)
            wall = time.monotonic() - started
            for workers in groups:
                workers.stop()
        except BaseException:
            for workers in groups:
                workers.kill()
            raise
        succeeded, failed, drain = harness.drain_window(conn)
    if (succeeded, failed) != (jobs, 0):
        raise harness.BenchError(f"{setup}: {succeeded} succeeded, {failed} failed")
    return {
        "setup": setup,
        "drain_seconds": round(drain, 3),
        "start_to_end_seconds": round(wall, 3),
        "peak_sessions": peak_sessions,
        "total_pss_mib": pss,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for setup in SETUPS:
        mine = [r for r in runs if r["setup"] == setup]
        if mine:
            summary[setup] = {
                key: statistics.median(r[key] for r in mine)
                for key in (
                    "drain_seconds",
                    "start_to_end_seconds",
                    "peak_sessions",
                    "total_pss_mib",
                )
            }
    stock = summary.get("stock")
    if stock:
        for setup in ("pools", "two_fleets"):
            if setup in summary:
                summary[setup]["drain_speed_vs_stock"] = round(
                    stock["drain_seconds"] / summary[setup]["drain_seconds"], 3
                )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-jobs", type=int, default=60)
    parser.add_argument("--cpu-ms", type=float, default=50.0)
    parser.add_argument("--io-jobs", type=int, default=400)
    parser.add_argument("--io-ms", type=float, default=200.0)
    parser.add_argument("--io-concurrency", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs" / "benchmarks-mixed.json"
    )
    args = parser.parse_args(argv)
    url = os.environ.get("DATABASE_URL")
    if not url:
        parser.error("DATABASE_URL is not set (scripts/bench.sh --only mixed sets it)")

    started = datetime.datetime.now(datetime.timezone.utc)
    loadavg = os.getloadavg()
    iterations = int(calibrate(args.cpu_ms) * args.cpu_ms)
    dbs = harness.Databases(url)
    runs = []
    dbs.create_template()
    try:
        version = dbs.server_version()
        for rep in range(args.reps):
            for setup in SETUPS:
                result = measure(setup, args, iterations, dbs)
                result["rep"] = rep
                runs.append(result)
                print(f"mixed: rep {rep}: {result}", flush=True)
    finally:
        dbs.drop_template()
    data = {
        "command": os.environ.get("BENCH_COMMAND")
        or " ".join([".venv/bin/python benchmarks/mixed.py", *(argv or sys.argv[1:])]),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "postgresql": version,
        "workload": {
            "cpu_jobs": args.cpu_jobs,
            "cpu_ms": args.cpu_ms,
            "io_jobs": args.io_jobs,
            "io_ms": args.io_ms,
            "io_concurrency": args.io_concurrency,
        },
        "versions": harness.versions(),
        "runs": runs,
        "summary": summarize(runs),
        "loadavg_at_start": loadavg,
    }
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"mixed: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
