#!/usr/bin/env python
"""What a job costs the database, in counts: prefork with 2 children against
2 stock ``procrastinate worker --concurrency 1`` processes.

    .venv/bin/python benchmarks/dbcost.py [--reps 3] [--port 54393]

Starts its own throwaway PostgreSQL with scripts/pg.sh on ``--port`` (it
turns ``log_statement = 'all'`` on there: never on a server of yours) and
stops it at the end. For each setup and repetition (interleaved), in a fresh
database: ``--jobs`` jobs of a task that makes one insert on its own session,
inserted before the workers start; the workers drain them and stop. Counted:

* transactions per job: ``xact_commit + xact_rollback`` of the database in
  ``pg_stat_database``, read once every session of the run has ended (a
  backend flushes its counters when it exits; PostgreSQL 15 otherwise flushes
  at most once a second, or after 10 s idle), less the harness's own
  statements (each one autocommitted transaction, counted in the log);
* statements per job in the server's log, by ``application_name``: the
  workers' (with how many are ``BEGIN``/``COMMIT`` and pool checks ``""``),
  and the task's own.

Writes docs/benchmarks-dbcost.json (``--out``).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import harness
from benchmarks.app import TASK_APPNAME

SETUPS = ("stock_procs", "prefork")
LOG_PREFIX = "%a|%d|"
#: one logged statement: simple protocol ("statement: ...") or extended
#: ("execute <unnamed>: ..." / "execute _pg3_0: ...")
STATEMENT = re.compile(
    r"^([^|\n]*)\|([^|\n]*)\|LOG:  (?:statement|execute [^:]*): ?(.*)$", re.MULTILINE
)


def start_server(port: int) -> tuple[str, Path]:
    env = {**os.environ, "PGPORT_THROWAWAY": str(port)}
    url = subprocess.run(
        [str(REPO / "scripts" / "pg.sh"), "start"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with harness.connect(url) as conn:
        conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        conn.execute(f"ALTER SYSTEM SET log_line_prefix = '{LOG_PREFIX}'")
        conn.execute("SELECT pg_reload_conf()")
    return url, REPO / ".pgdata" / str(port) / "postgres.log"


def stop_server(port: int) -> None:
    env = {**os.environ, "PGPORT_THROWAWAY": str(port)}
    subprocess.run([str(REPO / "scripts" / "pg.sh"), "stop"], env=env, check=False)


def transactions(url: str) -> int:
    with harness.connect(url) as conn:
        # a fresh snapshot of the counters, not one cached in this transaction
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def wait_sessions_gone(url: str) -> None:
    """Until every other session of the database has ended, so that its
    counters are flushed."""
    with harness.connect(url) as conn:
        harness.wait_for(
            lambda: (
                not conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                ).fetchone()
            ),
            30,
            0.1,
            "the run's sessions to end",
        )


def count_statements(log: Path, offset: int, dbname: str) -> dict[str, Any]:
    with open(log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    by_role: collections.Counter[str] = collections.Counter()
    for match in STATEMENT.finditer(text.replace("\r", "")):
        app, db, statement = match.groups()
        if db != dbname:
            continue
        if app == harness.HARNESS_APPNAME:
            by_role["harness"] += 1
        elif app == TASK_APPNAME:
            by_role["task"] += 1
        else:
            by_role["workers"] += 1
            word = statement.strip().upper()
            if word in ("BEGIN", "COMMIT", "ROLLBACK"):
                by_role["workers_begin_commit"] += 1
            elif not word:
                by_role["workers_checks"] += 1
    return dict(by_role)


def measure(
    setup: str, jobs: int, n: int, dbs: harness.Databases, log: Path, work: Path
) -> dict[str, Any]:
    with dbs.fresh() as url:
        dbname = harness.dbname_of(url)
        with harness.connect(url) as conn:
            conn.execute("CREATE TABLE bench_rows (n integer)")
            harness.defer(conn, "insert_one", jobs, {"n": 1})
        offset = log.stat().st_size
        before = transactions(url)
        workers = harness.Workers(setup, n, url, work).start()
        try:
            with harness.connect(url) as conn:
                workers.wait_ready(conn)
                harness.wait_for(
                    lambda: workers.check_alive() or not harness.unfinished(conn),
                    600,
                    1.0,
                    f"{setup} to drain",
                )
                rows = conn.execute("SELECT count(*) FROM bench_rows").fetchone()
            workers.stop()
        except BaseException:
            workers.kill()
            raise
        wait_sessions_gone(url)
        counts = count_statements(log, offset, dbname)
        spent = transactions(url) - before - counts.get("harness", 0)
    assert rows is not None and rows[0] == jobs, rows
    per_job = {k: round(v / jobs, 3) for k, v in counts.items()}
    return {
        "setup": setup,
        "jobs": jobs,
        "transactions": spent,
        "transactions_per_job": round(spent / jobs, 3),
        "statements": counts,
        "statements_per_job": per_job,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for setup in SETUPS:
        mine = [r for r in runs if r["setup"] == setup]
        if not mine:
            continue
        summary[setup] = {
            "transactions_per_job": statistics.median(
                r["transactions_per_job"] for r in mine
            ),
            **{
                f"{key}_per_job": statistics.median(
                    r["statements_per_job"].get(key, 0.0) for r in mine
                )
                for key in ("workers", "workers_begin_commit", "workers_checks", "task")
            },
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--n", type=int, default=2, help="children / processes")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--port", type=int, default=54393)
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs" / "benchmarks-dbcost.json"
    )
    args = parser.parse_args(argv)

    started = datetime.datetime.now(datetime.timezone.utc)
    loadavg = os.getloadavg()
    url, log = start_server(args.port)
    work = harness.workdir()
    dbs = harness.Databases(url)
    runs = []
    try:
        dbs.create_template()
        version = dbs.server_version()
        for rep in range(args.reps):
            for setup in SETUPS:
                result = measure(setup, args.jobs, args.n, dbs, log, work)
                result["rep"] = rep
                runs.append(result)
                print(
                    f"dbcost: {setup} rep {rep}: "
                    f"{result['transactions_per_job']} transactions/job, "
                    f"statements/job {result['statements_per_job']}",
                    flush=True,
                )
        dbs.drop_template()
    finally:
        stop_server(args.port)
    data = {
        "command": os.environ.get("BENCH_COMMAND")
        or " ".join([".venv/bin/python benchmarks/dbcost.py", *(argv or sys.argv[1:])]),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "postgresql": version,
        "n": args.n,
        "jobs": args.jobs,
        "versions": harness.versions(),
        "runs": runs,
        "summary": summarize(runs),
        "loadavg_at_start": loadavg,
    }
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"dbcost: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
