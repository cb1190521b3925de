#!/usr/bin/env python
"""What the fleet table costs the database: writes per second of a busy
4-child fleet (a drain of short jobs) and of an idle one, for this checkout
and, with ``--before DIR``, for another (e.g. the main branch's worktree).

    DATABASE_URL=... .venv/bin/python benchmarks/fleetwrites.py \\
        --before /path/to/main [--jobs 2400 --ms 50 --idle 30 --reps 2]

Each run gets a database of its own with the schema of the code it runs,
starts ``procrastinate-prefork worker --concurrency 4`` (default heartbeat
interval, 5 s) from that code, then either drains ``--jobs`` sleep jobs of
``--ms`` milliseconds or idles ``--idle`` seconds, and stops it. The counters
are read once every process of the run has exited (PostgreSQL flushes a
backend's statistics lazily, and always at its exit): rows inserted and
updated in the fleet table (``pg_stat_user_tables``) and the database's
committed transactions (``pg_stat_database.xact_commit``, the jobs' own
included), each divided by the fleet's lifetime. Writes
docs/benchmarks-fleetwrites.json (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import harness

CHILDREN = 4
FLEET_TABLE = "procrastinate_prefork_processes"
LOGS = harness.workdir()


def _git(code: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(code), *args], capture_output=True, text=True, check=False
    )
    return out.stdout.strip()


def _env(code: Path, db_url: str) -> dict[str, str]:
    # no bytecode written into the other checkout
    return {
        **os.environ,
        "DATABASE_URL": db_url,
        "PYTHONPATH": str(code),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _cli(*args: str) -> list[str]:
    app = ["--app", "benchmarks.app.app"]
    return [sys.executable, "-m", "procrastinate_prefork.cli", *app, *args]


def _database(admin_url: str, code: Path) -> str:
    from procrastinate import schema as procrastinate_schema

    name = f"fleetwrites_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with harness.connect(admin_url) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = harness.with_dbname(admin_url, name)
    with harness.connect(url) as conn:
        conn.execute(procrastinate_schema.SchemaManager.get_schema())  # type: ignore[arg-type]
    subprocess.run(
        _cli("schema", "--apply"),
        cwd=code,
        env=_env(code, url),
        check=True,
        capture_output=True,
    )
    return url


def _counters(url: str) -> dict[str, int]:
    with harness.connect(url) as conn:
        row = conn.execute(
            "SELECT t.n_tup_ins, t.n_tup_upd, d.xact_commit"
            " FROM pg_stat_user_tables AS t, pg_stat_database AS d"
            " WHERE t.relname = %s AND d.datname = current_database()",
            [FLEET_TABLE],
        ).fetchone()
    assert row is not None
    return {"fleet_inserts": row[0], "fleet_updates": row[1], "commits": row[2]}


def _ready(url: str) -> bool:
    with harness.connect(url) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {FLEET_TABLE}"
            " WHERE kind = 'child' AND state = 'idle'"
        ).fetchone()
    return bool(row and row[0] == CHILDREN)


def one_run(
    admin_url: str, code: Path, busy: bool, jobs: int, ms: float, idle: float
) -> dict[str, Any]:
    url = _database(admin_url, code)
    try:
        with open(LOGS / f"fleetwrites-{harness.dbname_of(url)}.log", "wb") as log:
            started = time.monotonic()
            proc = subprocess.Popen(
                _cli("worker", "--concurrency", str(CHILDREN)),
                cwd=code,
                env=_env(code, url),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            harness.wait_for(lambda: _ready(url), 60, 0.2, "the fleet ready")
            if busy:
                with harness.connect(url) as conn:
                    harness.defer(conn, "sleep", jobs, {"ms": ms})
                    harness.wait_for(
                        lambda: harness.unfinished(conn) == 0, 600, 1.0, "the drain"
                    )
            else:
                time.sleep(idle)
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            lifetime = time.monotonic() - started
        time.sleep(1.0)  # the exited backends' statistics are flushed
        counters = _counters(url)
    finally:
        with harness.connect(admin_url) as conn:
            dbname = harness.dbname_of(url)
            conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
    per_s = {f"{k}_per_s": round(v / lifetime, 3) for k, v in counters.items()}
    return {"busy": busy, "lifetime_s": round(lifetime, 2), **counters, **per_s}


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians of each code's busy and idle runs: rates, and the counts of one
    run (a busy run's extra commits are the fleet table's extra writes: the
    jobs are the same)."""
    keys = (
        "fleet_updates_per_s",
        "fleet_inserts_per_s",
        "commits_per_s",
        "fleet_updates",
        "commits",
        "lifetime_s",
    )
    return {
        name: {
            phase: {
                key: round(
                    statistics.median(r[key] for r in rs if r["busy"] == busy), 3
                )
                for key in keys
            }
            for phase, busy in (("busy", True), ("idle", False))
        }
        for name, rs in runs.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--jobs", type=int, default=2400)
    parser.add_argument("--ms", type=float, default=50.0)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs" / "benchmarks-fleetwrites.json"
    )
    args = parser.parse_args(argv)
    admin_url = os.environ.get("DATABASE_URL")
    if not admin_url:
        print("fleetwrites.py: set DATABASE_URL", file=sys.stderr)
        return 2
    codes = {"after": REPO}
    if args.before is not None:
        codes = {"before": args.before.resolve(), **codes}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in codes}
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"
    )
    for rep in range(args.reps):
        for name, code in codes.items():  # interleaved
            for busy in (True, False):
                run = one_run(admin_url, code, busy, args.jobs, args.ms, args.idle)
                print(f"rep {rep} {name} {'busy' if busy else 'idle'}: {run}")
                runs[name].append(run)
    summary = summarize(runs)
    data = {
        "command": os.environ.get("BENCH_COMMAND")
        or "benchmarks/fleetwrites.py " + " ".join(argv or sys.argv[1:]),
        "started_at": started_at,
        "children": CHILDREN,
        "jobs": args.jobs,
        "ms": args.ms,
        "idle_s": args.idle,
        "codes": {
            name: {
                "path": str(code),
                "commit": _git(code, "rev-parse", "--short", "HEAD"),
            }
            for name, code in codes.items()
        },
        "summary": summary,
        "runs": runs,
    }
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
