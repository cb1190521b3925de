#!/usr/bin/env python
"""The fleet's own queries on big tables against the same on empty ones.

    scripts/pg.sh start   # or any PostgreSQL you may create databases in
    DATABASE_URL=... .venv/bin/python benchmarks/bigtables.py [--idle-seconds 60]

Three databases (procrastinate's schema and ours): one empty; "bigjobs"
holding 1,000,000 finished jobs (3 events each), 100,000 ``todo`` jobs in a
queue the fleet does not serve and 10,000 of its own queue scheduled an hour
ahead; "big" holding the same and 1,000 other supervisors x 16 children
(live, each with a worker row, half of them running a job). On the empty and
the big one, every query of the fleet is timed per call (median of
``--calls``) and its plans are captured with ``auto_explain`` (EXPLAIN
ANALYZE of every statement, nested ones too); then on each of the three an
idle 4-child fleet runs for ``--idle-seconds`` and the CPU of the database
sessions serving it is read from ``/proc`` (so the server must run on this
machine). Writes docs/benchmarks-bigtables.json (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psycopg

from benchmarks import harness
from procrastinate_prefork.fleet import health as fleet_health
from procrastinate_prefork.fleet import identity, queries, recovery, snapshot, status
from procrastinate_prefork.fleet import table as fleet
from procrastinate_prefork.supervisor import poller

FINISHED = 1_000_000
TODO = 100_000
#: jobs of the served queue scheduled an hour ahead (not runnable yet)
SCHEDULED = 10_000
SUPERVISORS = 1_000
CHILDREN = 16
HOST = "bench-bigtables"
#: the other supervisors stay alive for the whole run without heartbeats
OTHERS_TIMEOUT = 86400.0

FILL_SQL = """
-- no triggers: the events are written below
SET session_replication_role = replica;
INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts,
                                scheduled_at)
SELECT 'default', 'noop_sync', '{}'::jsonb,
       CASE WHEN i %% 20 = 0 THEN 'failed' ELSE 'succeeded' END
           ::procrastinate_job_status,
       1, NULL
FROM generate_series(1, %(finished)s) AS i;
INSERT INTO procrastinate_events (job_id, type, at)
SELECT j.id, t.type::procrastinate_job_event_type,
       now() - make_interval(secs => 86400 - t.n)
FROM procrastinate_jobs AS j
CROSS JOIN (VALUES (0, 'deferred'), (1, 'started'), (2, 'succeeded')) AS t(n, type);
INSERT INTO procrastinate_jobs (queue_name, task_name, args, status)
SELECT 'backlog', 'noop_sync', '{}'::jsonb, 'todo'
FROM generate_series(1, %(todo)s);
INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, scheduled_at)
SELECT 'default', 'noop_sync', '{}'::jsonb, 'todo', now() + interval '1 hour'
FROM generate_series(1, %(scheduled)s);
SET session_replication_role = DEFAULT;
-- the fleet table and its workers (the "big" database only) --
SET session_replication_role = replica;
INSERT INTO procrastinate_workers (last_heartbeat)
SELECT now() FROM generate_series(1, %(supervisors)s * %(children)s);
INSERT INTO procrastinate_prefork_processes
    (kind, host, pid, state, concurrency, heartbeat_interval, stalled_timeout)
SELECT 'supervisor', 'other-' || i, 1000 + i, 'running', %(children)s, 5,
       %(others_timeout)s
FROM generate_series(1, %(supervisors)s) AS i;
INSERT INTO procrastinate_prefork_processes
    (kind, host, pid, supervisor_id, slot, worker_id, state)
SELECT 'child', s.host, 100000 + s.id * 100 + c, s.id, c,
       (SELECT min(id) FROM procrastinate_workers) + (s.id - 1) * %(children)s + c,
       'idle'
FROM procrastinate_prefork_processes AS s, generate_series(0, %(children)s - 1) AS c
WHERE s.kind = 'supervisor';
WITH busy AS (
    INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, worker_id)
    SELECT 'backlog', 'noop_sync', '{}'::jsonb, 'doing', c.worker_id
    FROM procrastinate_prefork_processes AS c
    WHERE c.kind = 'child' AND c.slot %% 2 = 0
    RETURNING id, worker_id
)
UPDATE procrastinate_prefork_processes AS c
SET state = 'busy', job_id = busy.id, job_ids = ARRAY[busy.id],
    task_name = 'noop_sync', job_started_at = now()
FROM busy WHERE busy.worker_id = c.worker_id;
SET session_replication_role = DEFAULT;
"""


FLEET_PART = "-- the fleet table and its workers"


def fill(url: str, fleet: bool = True) -> float:
    """The big jobs tables, and with ``fleet`` the big fleet table too."""
    start = time.monotonic()
    sql = FILL_SQL if fleet else FILL_SQL.split(FLEET_PART)[0]
    with harness.connect(url) as conn:
        params = {
            "finished": FINISHED,
            "todo": TODO,
            "scheduled": SCHEDULED,
            "supervisors": SUPERVISORS,
            "children": CHILDREN,
            "others_timeout": OTHERS_TIMEOUT,
        }
        for statement in sql.split(";\n"):
            if statement.strip():
                conn.execute(statement, params)  # type: ignore[arg-type]
        conn.execute("VACUUM ANALYZE")
    return time.monotonic() - start


def counts(url: str) -> dict[str, int]:
    with harness.connect(url) as conn:
        out = {}
        for table in (
            "procrastinate_jobs",
            "procrastinate_events",
            "procrastinate_workers",
            "procrastinate_prefork_processes",
        ):
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            out[table] = int(row[0]) if row else 0
        return out


# ------------------------------------------------------------------- queries


class Plans:
    """Every statement's EXPLAIN ANALYZE, sent back by auto_explain as notices."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.captured: list[str] = []
        self.recording = False
        conn.add_notice_handler(self._notice)
        conn.execute("LOAD 'auto_explain'")
        for name, value in (
            ("log_min_duration", "0"),
            ("log_analyze", "on"),
            ("log_nested_statements", "on"),
            ("log_timing", "off"),
            ("log_buffers", "on"),
        ):
            conn.execute(f"SET auto_explain.{name} = {value}")
        conn.execute("SET client_min_messages = log")

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if self.recording and diag.message_primary:
            self.captured.append(diag.message_primary)


def seq_scans(plans: list[str]) -> list[str]:
    """Tables of ours or procrastinate's read in full by any plan."""
    found = set()
    for plan in plans:
        found.update(re.findall(r"Seq Scan on (procrastinate_\w+)", plan))
    return sorted(found)


class Fixture:
    """What the timed calls need in one database: our supervisor with 4
    children, and a worker with a ``doing`` job to recover for each call."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.supervisor = fleet.register_supervisor(
            conn,
            host=HOST,
            pid=1,
            concurrency=4,
            queues=["default"],
            heartbeat_interval=5,
            stalled_timeout=30,
        )
        rows = conn.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) "
            "SELECT now() FROM generate_series(1, 4) RETURNING id"
        ).fetchall()
        now = datetime.datetime.now(datetime.timezone.utc)
        self.snapshot = snapshot.FleetSnapshot(
            host=HOST,
            pid=1,
            phase="running",
            concurrency=4,
            crash_looping=False,
            database_up=True,
            child_timeout=60,
            children=[
                snapshot.ChildSnapshot(
                    slot=i,
                    pid=10 + i,
                    state="idle",
                    heartbeat_age=0.0,
                    worker_id=int(r[0]),
                    started_at=now,
                )
                for i, r in enumerate(rows)
            ],
        )
        self.judgement = recovery.Judgement(
            healthy_for=3600, slack=5, own_timeout=30, own_interval=5, stock_timeout=30
        )

    def heartbeat(self) -> None:
        fleet.heartbeat(
            self.conn, supervisor_id=self.supervisor, snapshot=self.snapshot
        )

    def dead_child(self) -> int:
        row = self.conn.execute(
            "WITH w AS (INSERT INTO procrastinate_workers (last_heartbeat) "
            "VALUES (now()) RETURNING id) "
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, "
            "worker_id) SELECT 'recovered', 'noop_sync', '{}', 'doing', id FROM w "
            "RETURNING worker_id"
        ).fetchone()
        assert row is not None
        return int(row[0])

    def recover(self, worker_id: int) -> None:
        done = recovery.recover_worker_jobs(
            self.conn, [worker_id], cause="bench", max_crash_retries=3
        )
        assert len(done) == 1, done

    def sweep(self) -> None:
        swept = recovery.sweep_stalled(
            self.conn, judgement=self.judgement, max_crash_retries=3
        )
        assert swept == [], swept

    def prune(self) -> None:
        fleet.prune(
            self.conn,
            judgement=self.judgement.params(),
            retention=fleet.DEFAULT_RETENTION,
        )

    def status(self) -> None:
        rows = status.fetch_rows_psycopg(self.conn)
        fleet_health.fleet_health(
            snapshot.from_rows(rows), fleet_health.FleetQuery.build()
        )

    def health_view(self) -> None:
        # the Django health view runs the same statement on Django's cursor
        with self.conn.cursor() as cur:
            cur.execute(queries.get("fleet_rows"), {"live_only": True})
            cur.fetchall()

    def procrastinate_fetch(self) -> None:
        # the served queue has no runnable job: nothing is fetched
        row = self.conn.execute(
            "SELECT id FROM "
            "procrastinate_fetch_job_v2(ARRAY['default']::varchar[], NULL)"
        ).fetchone()
        assert row is None or row[0] is None, row

    def predecessors(self) -> None:
        identity.dead_predecessors(
            self.conn,
            host=HOST,
            own_id=self.supervisor,
            stalled_timeout=30,
            identity=None,
        )


def time_queries(url: str, calls: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with harness.connect(url) as conn:
        fx = Fixture(conn)
        plans = Plans(conn)
        cases: dict[str, tuple[Callable[[], Any] | None, Callable[[Any], Any]]] = {
            "heartbeat": (None, lambda _: fx.heartbeat()),
            "sweep": (None, lambda _: fx.sweep()),
            "recover_dead_child": (fx.dead_child, fx.recover),
            "prune": (None, lambda _: fx.prune()),
            "status": (None, lambda _: fx.status()),
            "health_view": (None, lambda _: fx.health_view()),
            "autoscale_count_all": (None, lambda _: fleet.count_runnable(conn, None)),
            "autoscale_count_queue": (
                None,
                lambda _: fleet.count_runnable(conn, ["default"]),
            ),
            "dead_predecessors": (None, lambda _: fx.predecessors()),
            # the supervisor's poll of a pool of queue default, 4 idle children
            "supervisor_poll": (
                None,
                lambda _: poller.count_runnable(conn, ["default"], 4),
            ),
            # procrastinate's own fetch, as a stock worker's timer sends it
            "procrastinate_fetch": (None, lambda _: fx.procrastinate_fetch()),
        }
        for name, (prepare, call) in cases.items():
            times = []
            for i in range(calls + 1):
                arg = prepare() if prepare else None
                explain = i == 0  # the first call, also warming up, explains
                plans.recording = explain
                conn.execute(
                    f"SET auto_explain.log_min_duration = {0 if explain else -1}"
                )
                start = time.perf_counter()
                call(arg)
                elapsed = time.perf_counter() - start
                if not explain:
                    times.append(elapsed)
            plans.recording = False
            captured, plans.captured = plans.captured, []
            results[name] = {
                "median_ms": round(1000 * statistics.median(times), 3),
                "max_ms": round(1000 * max(times), 3),
                "calls": calls,
                "seq_scans": seq_scans(captured),
                "plans": captured,
            }
    return results


# ------------------------------------------------------------------ idle fleet


def backend_pids(conn: psycopg.Connection) -> list[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    ).fetchall()
    return [int(r[0]) for r in rows]


def idle_fleet_cpu(
    url: str, workdir: Path, seconds: float, settle: float
) -> dict[str, Any]:
    """CPU seconds per second of the database sessions of an idle 4-child
    fleet (and of the fleet's own processes)."""
    workers = harness.Workers(
        "prefork", 4, url, workdir, extra_args=["--queues", "default"]
    ).start()
    try:
        with harness.connect(url) as conn:
            workers.wait_ready(conn)
            time.sleep(settle)
            pids = backend_pids(conn)
            before = harness.cpu_by_pid(pids)
            fleet_before = harness.cpu_by_pid(workers.all_pids())
            time.sleep(seconds)
            after = harness.cpu_by_pid(pids)
            fleet_after = harness.cpu_by_pid(workers.all_pids())
        server = sum(t - before.get(pid, 0.0) for pid, t in after.items())
        own = sum(t - fleet_before.get(pid, 0.0) for pid, t in fleet_after.items())
        return {
            "seconds": seconds,
            "sessions": len(pids),
            "server_cpu_ms_per_s": round(1000 * server / seconds, 3),
            "fleet_cpu_ms_per_s": round(1000 * own / seconds, 3),
        }
    finally:
        workers.stop()


# ------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    import os

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=50, help="timed calls per query")
    p.add_argument("--idle-seconds", type=float, default=60.0)
    p.add_argument(
        "--idle-reps",
        type=int,
        default=2,
        help="idle-fleet measurements per database, interleaved",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="seconds between 'fleet ready' and the idle measurement",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the row counts (a smoke-sized run; not for the docs)",
    )
    p.add_argument(
        "--out", type=Path, default=REPO / "docs" / "benchmarks-bigtables.json"
    )
    args = p.parse_args(argv)
    db_url = os.environ.get("DATABASE_URL")
    if not db_url:
        print("bigtables.py: set DATABASE_URL", file=sys.stderr)
        return 2
    global FINISHED, TODO, SCHEDULED, SUPERVISORS
    FINISHED, TODO = int(FINISHED * args.scale), int(TODO * args.scale)
    SCHEDULED = int(SCHEDULED * args.scale)
    SUPERVISORS = max(1, int(SUPERVISORS * args.scale))
    log = harness_log()
    started = datetime.datetime.now(datetime.timezone.utc)
    workdir = harness.workdir()
    dbs = harness.Databases(db_url)
    out: dict[str, Any] = {
        "command": os.environ.get("BENCH_COMMAND")
        or "benchmarks/bigtables.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "started_at": started.isoformat(timespec="seconds"),
        "machine_busy_at_start": round(harness.background_busy(3.0), 3),
        "loadavg_at_start": os.getloadavg(),
        "postgresql": dbs.server_version(),
        "sizes": {
            "finished": FINISHED,
            "todo": TODO,
            "scheduled": SCHEDULED,
            "supervisors": SUPERVISORS,
            "children": CHILDREN,
        },
    }
    dbs.create_template()
    try:
        with dbs.fresh() as empty, dbs.fresh() as bigjobs, dbs.fresh() as big:
            log("filling the big databases")
            out["fill_s"] = round(fill(big), 1)
            fill(bigjobs, fleet=False)
            out["rows"] = {
                "empty": counts(empty),
                "bigjobs": counts(bigjobs),
                "big": counts(big),
            }
            log(f"  {out['fill_s']} s: {out['rows']['big']}")
            out["queries"] = {}
            for name, url in (("empty", empty), ("big", big)):
                log(f"timing the fleet's queries on the {name} database")
                out["queries"][name] = time_queries(url, args.calls)
            out["idle"] = {"empty": [], "bigjobs": [], "big": []}
            for rep in range(args.idle_reps):
                for name, url in (("empty", empty), ("bigjobs", bigjobs), ("big", big)):
                    log(f"idle 4-child fleet on the {name} database, rep {rep + 1}")
                    busy = harness.background_busy(2.0)
                    run = idle_fleet_cpu(url, workdir, args.idle_seconds, args.settle)
                    run["machine_busy_before"] = round(busy, 3)
                    out["idle"][name].append(run)
                    log(f"  {run}")
    finally:
        dbs.drop_template()
    out["finished_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"
    )
    out["loadavg_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    log(f"wrote {args.out}")
    return 0


def harness_log() -> Callable[[str], None]:
    start = time.monotonic()

    def log(message: str) -> None:
        print(
            f"[{time.monotonic() - start:7.1f} s] {message}",
            file=sys.stderr,
            flush=True,
        )

    return log


if __name__ == "__main__":
    sys.exit(main())
