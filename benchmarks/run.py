#!/usr/bin/env python
"""Benchmark procrastinate-prefork against stock procrastinate (and Celery's
prefork pool) in one run, on one PostgreSQL; write docs/benchmarks.json,
docs/benchmarks.md and docs/benchmarks.png.

    scripts/bench.sh                 # everything (about 40 minutes on 2 cores)
    scripts/bench.sh --quick         # job counts / 5 and 5 kills: a few minutes
    benchmarks/run.py --only cpu50 --ns 2 --reps 1   # with DATABASE_URL set

Scenarios (``--only``): cpu50, cpu20, noop_sync, noop_async, sleep50,
lifecycle (start-up, memory, sessions, shutdown at N = 1, 4, 8), recovery;
and, only when named, bigtables, pgbouncer, profile, fleetwrites and
fleetstatus (benchmarks/<name>.py, each writing docs/benchmarks-<name>.json).
DATABASE_URL must point at a PostgreSQL the harness may create databases in
(``scripts/bench.sh`` starts a throwaway one).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import harness, report, scenarios
from benchmarks.work import calibrate

ALL = ("cpu50", "cpu20", "noop_sync", "noop_async", "sleep50", "lifecycle", "recovery")
#: run only when named in --only; each writes docs/benchmarks-<name>.json, whose
#: section benchmarks.md gets at its next rendering
STANDALONE = (
    "bigtables",
    "pgbouncer",
    "profile",
    "fleetwrites",
    "fleetstatus",
    "dbcost",
    "mixed",
)


def _csv(kind: type) -> Any:
    def parse(text: str) -> tuple[Any, ...]:
        return tuple(kind(x) for x in text.split(",") if x.strip())

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="job counts x 0.2 and 5 kills (a smoke-sized run; not for the docs)",
    )
    p.add_argument("--scale", type=float, default=None, help="multiply every job count")
    p.add_argument(
        "--reps",
        type=int,
        default=3,
        help="repetitions of each drain and "
        "lifecycle measurement (default 3; figures are medians)",
    )
    p.add_argument(
        "--only", type=_csv(str), default=ALL, help=f"comma-separated: {','.join(ALL)}"
    )
    p.add_argument(
        "--ns", type=_csv(int), default=None, help="only these N for the drains"
    )
    p.add_argument(
        "--kinds",
        type=_csv(str),
        default=None,
        help="only these setups: stock,stock_procs,prefork,celery",
    )
    p.add_argument("--lifecycle-ns", type=_csv(int), default=(1, 4, 8))
    p.add_argument("--recovery-ns", type=_csv(int), default=(2, 1))
    p.add_argument(
        "--kills", type=int, default=None, help="recovery kills per N (default 25)"
    )
    p.add_argument(
        "--no-celery", action="store_true", help="skip the Celery comparison"
    )
    p.add_argument("--redis-port", type=int, default=56390)
    p.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="seconds between 'every worker ready' and the insert",
    )
    p.add_argument(
        "--poll",
        type=float,
        default=1.0,
        help="seconds between the harness's progress queries during a drain",
    )
    p.add_argument(
        "--quiet-below",
        type=float,
        default=0.15,
        help="before each measurement, wait until other processes use less than "
        "this share of the machine's CPU (default 0.15; 1 disables)",
    )
    p.add_argument(
        "--quiet-timeout",
        type=float,
        default=120.0,
        help="longest wait for a quiet machine before each measurement (s)",
    )
    p.add_argument(
        "--noise-seconds",
        type=float,
        default=5.0,
        help="seconds spent measuring the background load at start and end",
    )
    p.add_argument("--out-dir", type=Path, default=REPO / "docs")
    p.add_argument(
        "--render-only",
        action="store_true",
        help="re-render benchmarks.md/.png from the existing benchmarks.json",
    )
    return p


class Progress:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self.start
        print(f"[{elapsed:7.1f} s] {message}", file=sys.stderr, flush=True)


def _terminate(signum: int, frame: Any) -> None:
    # Let the finally blocks run: stop the workers and Redis, drop the databases.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "benchmarks.json"
    if args.render_only:
        report.render(json.loads(json_path.read_text()), out_dir)
        return 0
    unknown = set(args.only) - set(ALL) - set(STANDALONE)
    if unknown:
        print(
            f"run.py: unknown scenario(s) {', '.join(sorted(unknown))}", file=sys.stderr
        )
        return 2
    db_url = os.environ.get("DATABASE_URL")
    if not db_url:
        print("run.py: set DATABASE_URL (or use scripts/bench.sh)", file=sys.stderr)
        return 2
    standalone = [name for name in STANDALONE if name in args.only]
    for name in standalone:
        module = importlib.import_module(f"benchmarks.{name}")
        rc = module.main(["--out", str(out_dir / f"benchmarks-{name}.json")])
        if rc:
            return int(rc)
    if standalone and not set(args.only) & set(ALL):
        print(
            "run.py: re-render docs/benchmarks.md with --render-only to include "
            "the new figures",
            file=sys.stderr,
        )
        return 0
    args.only = tuple(name for name in args.only if name in ALL)
    scale = args.scale if args.scale is not None else (0.2 if args.quick else 1.0)
    kills = args.kills if args.kills is not None else (5 if args.quick else 25)
    log = Progress()
    # Results so far go to a file of their own: docs/benchmarks.json is only
    # replaced by a run that finished.
    partial_path = (
        Path(tempfile.gettempdir()) / f"prefork-bench-partial-{os.getpid()}.json"
    )
    log(f"results so far: {partial_path} (kept if the run fails)")

    results: dict[str, Any] = {
        "meta": {
            "command": os.environ.get("BENCH_COMMAND")
            or shlex.join(
                ["benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]
            ),
            "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "machine": harness.machine(),
            "versions": harness.versions(),
            "scale": scale,
            "reps": args.reps,
            "settle_s": args.settle,
            "poll_s": args.poll,
            "quick": args.quick,
            "noise": {},
            "quiet_below": args.quiet_below,
            "worker_sessions": "harness",
            "quiet_timeout_s": args.quiet_timeout,
        },
    }
    meta = results["meta"]
    log(f"measuring the machine's background load ({args.noise_seconds:g} s)")
    meta["noise"]["background_busy_at_start"] = round(
        harness.background_busy(args.noise_seconds), 3
    )

    celery_reason = (
        "skipped (--no-celery)" if args.no_celery else harness.Redis.available()
    )
    meta["celery"] = celery_reason or "included"
    workdir = harness.workdir()
    meta["code"] = harness.snapshot_code(workdir / "code")
    dbs = harness.Databases(db_url)
    meta["versions"]["postgresql"] = dbs.server_version()
    redis = None
    try:
        dbs.create_template()
        if celery_reason is None:
            redis = harness.Redis(args.redis_port, workdir).start()
        log("calibrating the CPU task")
        ipms = calibrate()
        results["calibration"] = {"iterations_per_ms": round(ipms, 2)}
        ctx = scenarios.Context(
            dbs=dbs,
            workdir=workdir,
            redis=redis,
            iters_per_ms=ipms,
            settle=args.settle,
            poll=args.poll,
            log=log,
            quiet_below=args.quiet_below if args.quiet_below < 1 else None,
            quiet_timeout=args.quiet_timeout,
        )
        run_all(ctx, args, scale, kills, results, partial_path, log)
        meta["noise"]["background_busy_at_end"] = round(
            harness.background_busy(args.noise_seconds), 3
        )
        meta["loadavg_at_end"] = os.getloadavg()
        meta["finished_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        )
        meta["duration_s"] = round(time.monotonic() - log.start, 1)
        save(results, json_path)
        partial_path.unlink(missing_ok=True)
        written = report.render(results, out_dir)
        log("wrote " + ", ".join(str(p) for p in [json_path, *written]))
    finally:
        if redis is not None:
            redis.stop()
        try:
            dbs.drop_template()
        except Exception:  # best effort
            traceback.print_exc()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def save(results: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)


def run_all(
    ctx: scenarios.Context,
    args: argparse.Namespace,
    scale: float,
    kills: int,
    results: dict[str, Any],
    json_path: Path,
    log: Progress,
) -> None:
    celery = ctx.redis is not None
    drains = [name for name in scenarios.DRAINS if name in args.only]
    raw: list[dict[str, Any]] = []
    results["drain_runs"] = raw
    noise = results["meta"]["noise"].setdefault("background_busy_between_blocks", [])
    # Repetitions are interleaved (every setup once, then again...), so that a
    # burst of load from elsewhere hits every setup rather than one.
    for rep in range(args.reps):
        for name in drains:
            count = max(4, round(scenarios.DRAINS[name]["count"] * scale))
            for kind, n in scenarios.drain_setups(name, args.ns, celery, args.kinds):
                log(f"rep {rep + 1}/{args.reps} {name} {kind} N={n}: {count} jobs")
                run = scenarios.drain(ctx, name, kind, n, count)
                run["rep"] = rep
                raw.append(run)
                cpu = run["cpu"]
                log(
                    f"  {run['rate']} jobs/s in {run['seconds']:.2f} s "
                    f"(foreign CPU {cpu['foreign_cpu_frac']:.0%} of the machine)"
                )
            noise.append(round(harness.background_busy(2.0), 3))
            results["drains"] = aggregate_drains(raw)
            save(results, json_path)

    if "lifecycle" in args.only:
        runs: list[dict[str, Any]] = []
        results["lifecycle_runs"] = runs
        kinds = ["stock", "stock_procs", "prefork"] + (["celery"] if celery else [])
        if args.kinds:
            kinds = [k for k in kinds if k in args.kinds]
        for rep in range(args.reps):
            for n in args.lifecycle_ns:
                for kind in kinds:
                    if kind == "stock_procs" and n == 1:
                        continue
                    log(f"rep {rep + 1}/{args.reps} lifecycle {kind} N={n}")
                    run = scenarios.lifecycle(ctx, kind, n)
                    run["rep"] = rep
                    runs.append(run)
                    log(
                        f"  start-up {run['startup_s']} s, shutdown "
                        f"{run['shutdown_s']} s, "
                        f"PSS/child {run['memory']['per_child_pss']} MiB, "
                        f"sessions {run.get('sessions_after_jobs', '-')}"
                    )
        noise.append(round(harness.background_busy(2.0), 3))
        results["lifecycle"] = aggregate_lifecycle(runs)
        save(results, json_path)

    if "recovery" in args.only:
        results["recovery"] = []
        for n in args.recovery_ns:
            log(f"recovery: {kills} kills, prefork N={n}")
            rec = scenarios.recovery(ctx, n, kills)
            results["recovery"].append(rec)
            log(f"  p50 {rec['p50_s']} s, p95 {rec['p95_s']} s, max {rec['max_s']} s")
            save(results, json_path)
        noise.append(round(harness.background_busy(2.0), 3))


def aggregate_drains(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for run in raw:
        groups.setdefault((run["scenario"], run["kind"], run["n"]), []).append(run)
    out = []
    for (name, kind, n), runs in groups.items():
        rates = [r["rate"] for r in runs]
        jobs = runs[0]["jobs"]
        out.append(
            {
                "scenario": name,
                "kind": kind,
                "n": n,
                "jobs": jobs,
                "reps": len(runs),
                "rate": scenarios.summarize(rates),
                "seconds": scenarios.summarize([r["seconds"] for r in runs]),
                "workers_cpu_ms_per_job": round(
                    statistics.median(
                        1000 * r["cpu"]["workers_cpu_s"] / jobs for r in runs
                    ),
                    3,
                ),
                "server_cpu_ms_per_job": round(
                    statistics.median(
                        1000 * r["cpu"]["server_cpu_s"] / jobs for r in runs
                    ),
                    3,
                ),
                "foreign_cpu_frac_max": max(r["cpu"]["foreign_cpu_frac"] for r in runs),
            }
        )
        if all("task_cpu_s" in r for r in runs):
            out[-1]["task_cpu_ms_per_job"] = round(
                statistics.median(1000 * r["task_cpu_s"] / jobs for r in runs), 3
            )
    return out


def aggregate_lifecycle(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["kind"], run["n"]), []).append(run)
    out = []
    for (kind, n), rs in groups.items():
        entry: dict[str, Any] = {
            "kind": kind,
            "n": n,
            "reps": len(rs),
            "startup_s": scenarios.summarize([r["startup_s"] for r in rs]),
            "shutdown_s": scenarios.summarize([r["shutdown_s"] for r in rs]),
        }
        for key in (
            "per_child_uss",
            "per_child_pss",
            "per_child_rss",
            "parent_pss",
            "total_pss",
            "total_uss",
        ):
            entry[key] = round(statistics.median(r["memory"][key] for r in rs), 2)
        if "sessions_idle" in rs[0]:
            entry["sessions_idle"] = max(r["sessions_idle"] for r in rs)
            entry["sessions_after_jobs"] = max(r["sessions_after_jobs"] for r in rs)
        out.append(entry)
    return out


if __name__ == "__main__":
    sys.exit(main())
