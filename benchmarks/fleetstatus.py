"""The status command and the health view on a big fleet table.

Two fleet tables of 17,000 rows each: ``live``, 1,000 supervisors x 16
children all alive (the fleet of benchmarks/bigtables.py), and ``stopped``,
50 live supervisors x 16 children among 950 stopped ones and their children
(many hosts' old rows, before a prune). Each way of reading the fleet is timed
per call, client side, through the same functions the commands and the views
call (median of ``--calls``, after one warm-up call), in a process of its
own for each code measured.

``--before DIR`` measures another checkout too (its package, its schema),
interleaved with this one, ``--reps`` times: a checkout from before this
benchmark existed reads every row for every case. The cases "--limit 0" (the
whole listing, as every listing was before the listing limit) are measured
on a code that has the limit only.

    .venv/bin/python benchmarks/fleetstatus.py [--before DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

import psycopg

from benchmarks import harness
from procrastinate_prefork.fleet import health, status

FILL = """
INSERT INTO procrastinate_prefork_processes
    (kind, host, pid, state, concurrency, heartbeat_interval, stalled_timeout)
SELECT 'supervisor', 'host-' || i, 1000 + i,
       CASE WHEN i <= %(live)s THEN 'running' ELSE 'stopped' END, 16, 5, 86400
FROM generate_series(1, 1000) AS i;
INSERT INTO procrastinate_prefork_processes
    (kind, host, pid, supervisor_id, slot, state, job_id, task_name,
     job_started_at)
SELECT 'child', s.host, 100000 + s.id * 100 + c, s.id, c,
       CASE WHEN s.state = 'stopped' THEN 'stopped'
            WHEN c %% 2 = 0 THEN 'busy' ELSE 'idle' END,
       CASE WHEN c %% 2 = 0 THEN s.id * 100 + c END,
       CASE WHEN c %% 2 = 0 THEN 'noop_sync' END,
       CASE WHEN c %% 2 = 0 THEN now() END
FROM procrastinate_prefork_processes AS s, generate_series(0, 15) AS c
WHERE s.kind = 'supervisor';
VACUUM ANALYZE procrastinate_prefork_processes
"""

SHAPES = {"live": 1000, "stopped": 50}


def cases(conn: psycopg.Connection) -> dict[str, Callable[[], Any]]:
    """Each way the fleet is read, as the commands and views read it."""
    query = health.FleetQuery()
    by_host = health.FleetQuery(host="host-7")

    def command(q: health.FleetQuery, **flags: bool) -> Callable[[], Any]:
        def run() -> Any:
            if hasattr(status, "psycopg_reader"):
                source: Any = status.psycopg_reader(conn)
            else:  # a checkout from before: every row, for every case
                source = lambda: status.fetch_rows_psycopg(conn)  # noqa: E731
            out = io.StringIO()
            flags.setdefault("as_json", False)
            flags.setdefault("check", False)
            status.report(source, q, out=out, err=out, **flags)  # type: ignore[arg-type]
            return out.getvalue()

        return run

    def view(q: health.FleetQuery, listing: bool) -> Callable[[], Any]:
        def run() -> Any:
            if hasattr(status, "judge"):
                read = status.psycopg_reader(conn)
                return status.judge(read, q, listing=listing).as_dict()
            from procrastinate_prefork.fleet import snapshot

            rows = status.fetch_rows_psycopg(conn)
            return health.fleet_health(snapshot.from_rows(rows), q).as_dict()

        return run

    timed = {
        "status": command(query),
        "status --json": command(query, as_json=True),
        "status --check": command(query, check=True),
        "status --host H": command(by_host),
        "health view, staff (whole document)": view(query, True),
        "health view, anonymous / django-health-check": view(query, False),
    }
    if hasattr(query, "limit"):  # a code with a listing limit (default 50)
        everyone = health.FleetQuery(limit=0)
        timed["status --limit 0"] = command(everyone)
        timed["health view, staff, ?limit=0"] = view(everyone, True)
    return timed


def time_calls(run: Callable[[], Any], calls: int) -> dict[str, float]:
    run()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run()
        times.append(1000 * (time.perf_counter() - start))
    return {"median_ms": statistics.median(times), "max_ms": max(times)}


def measure(calls: int) -> dict[str, dict[str, float]]:
    """Every case on both fleet tables, with the code this process imports."""
    databases = harness.Databases(os.environ["DATABASE_URL"])
    databases.create_template()
    results: dict[str, dict[str, float]] = {}
    try:
        for shape, live in SHAPES.items():
            with databases.fresh() as url, harness.connect(url) as conn:
                for statement in FILL.split(";\n"):
                    conn.execute(statement, {"live": live})  # type: ignore[arg-type]
                for name, run in cases(conn).items():
                    results[f"{shape}: {name}"] = time_calls(run, calls)
    finally:
        databases.drop_template()
    return results


def _git(path: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(path), *args], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--out", default=None, help="also write JSON here")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:  # one code, in this process: JSON on stdout
        print(json.dumps(measure(args.calls)))
        return 0
    if not os.environ.get("DATABASE_URL"):
        print("fleetstatus.py: set DATABASE_URL", file=sys.stderr)
        return 2
    codes = {"after": REPO}
    if args.before is not None:
        codes = {"before": args.before.resolve(), **codes}
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"
    )
    load_average = list(os.getloadavg())
    runs: dict[str, list[dict[str, dict[str, float]]]] = {n: [] for n in codes}
    for rep in range(args.reps):
        for name, code in codes.items():  # interleaved
            out = subprocess.run(
                [sys.executable, __file__, "--measure", "--calls", str(args.calls)],
                cwd=code,
                env={**os.environ, "PYTHONPATH": str(code)},
                capture_output=True,
                text=True,
                check=True,
            )
            runs[name].append(json.loads(out.stdout))
            print(f"rep {rep} {name}: done", file=sys.stderr, flush=True)
    cases_ms = {
        case: {
            name: statistics.median(r[case]["median_ms"] for r in runs[name])
            for name in codes
            if case in runs[name][0]  # a case the other code has not
        }
        for case in runs["after"][0]
    }
    for case, figures in cases_ms.items():
        shown = "  ".join(f"{n} {ms:8.2f} ms" for n, ms in figures.items())
        print(f"{case:58} {shown}")
    data = {
        "command": os.environ.get("BENCH_COMMAND")
        or "benchmarks/fleetstatus.py " + " ".join(argv or sys.argv[1:]),
        "started_at": started_at,
        "server": harness.Databases(os.environ["DATABASE_URL"]).server_version(),
        "load_average": load_average,
        "calls": args.calls,
        "reps": args.reps,
        "codes": {
            name: {
                "path": str(code),
                "commit": _git(code, "rev-parse", "--short", "HEAD"),
            }
            for name, code in codes.items()
        },
        "median_ms": cases_ms,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
