#!/usr/bin/env python
"""A fleet of 8 children through PgBouncer (transaction pooling, a pool of 2
server sessions) against the same fleet on direct connections.

    scripts/pg.sh start   # or any local PostgreSQL you may create databases in
    DATABASE_URL=... .venv/bin/python benchmarks/pgbouncer.py [--reps 3]

Needs the ``pgbouncer`` binary (Debian: apt-get install pgbouncer); as root it
runs as the user ``pgthrow`` (scripts/pg.sh's) or ``postgres``. Through
PgBouncer the supervisor's LISTEN session goes direct (``--listen-dsn``), as
docs/howto/connections.md says. For each setup and repetition (interleaved):
the PostgreSQL server sessions of the database while the fleet is idle and
the most seen during a drain (sampled once per ``--poll`` seconds), and the
drain rate of ``--jobs`` no-op sync jobs and of ``--cpu-jobs`` 20 ms CPU
jobs. Writes docs/benchmarks-pgbouncer.json (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psycopg

from benchmarks import harness
from benchmarks.bigtables import harness_log
from benchmarks.work import calibrate

CHILDREN = 8
POOL_SIZE = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_url(url: str, port: int) -> str:
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return urlunsplit(
        parts._replace(
            netloc=f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
        )
    )


@contextmanager
def pgbouncer(server_url: str) -> Iterator[int]:
    """A PgBouncer in transaction mode for every database of the server."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.access(binary, os.X_OK):
        raise harness.BenchError(
            "pgbouncer is not installed (apt-get install pgbouncer)"
        )
    as_user: list[str] = []
    if os.geteuid() == 0:
        users = [u for u in ("pgthrow", "postgres") if _user_exists(u)]
        if not users:
            raise harness.BenchError(
                "as root, pgbouncer needs a 'pgthrow' or 'postgres' user"
            )
        as_user = ["-u", users[0]]
    server = urlsplit(server_url)
    port = _free_port()
    # its own directory: as root, pgbouncer's user must reach it
    home = Path(tempfile.mkdtemp(prefix="prefork-bench-pgbouncer-"))
    home.chmod(0o777)
    (home / "users.txt").write_text(f'"{server.username or "postgres"}" ""\n')
    (home / "pgbouncer.ini").write_text(
        f"[databases]\n* = host={server.hostname} port={server.port or 5432}\n\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
        f"unix_socket_dir =\nauth_type = trust\nauth_file = {home}/users.txt\n"
        f"pool_mode = transaction\ndefault_pool_size = {POOL_SIZE}\n"
        f"max_client_conn = 500\nlogfile = {home}/pgbouncer.log\n"
        f"pidfile = {home}/pgbouncer.pid\n"
    )
    for path in home.iterdir():
        path.chmod(0o644)
    proc = subprocess.Popen(
        [binary, *as_user, str(home / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )

    def up() -> bool:
        if proc.poll() is not None:
            raise harness.BenchError(
                "pgbouncer exited: "
                + (home / "pgbouncer.log").read_text(errors="replace")
            )
        try:
            psycopg.connect(_port_url(server_url, port), connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    try:
        harness.wait_for(up, 20, 0.2, "pgbouncer")
        yield port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(home, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def server_sessions(conn: psycopg.Connection) -> int:
    """Client backends of this database, the harness's own excluded."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    ).fetchone()
    return int(row[0]) if row else 0


def run_once(
    setup: str,
    direct: str,
    via: str | None,
    workdir: Path,
    drains: list[tuple[str, dict[str, Any], int]],
    settle: float,
    poll: float,
    timeout: float,
) -> dict[str, Any]:
    extra = ["--listen-dsn", direct] if via else []
    workers = harness.Workers(
        "prefork", CHILDREN, via or direct, workdir, extra_args=extra
    ).start()
    result: dict[str, Any] = {"setup": setup}
    try:
        with harness.connect(direct) as conn:
            workers.wait_ready(conn)
            time.sleep(settle)
            result["sessions_idle"] = server_sessions(conn)
            for task, args, count in drains:
                conn.execute("TRUNCATE procrastinate_events")
                harness.defer(conn, task, count, args)
                most = 0
                deadline = time.monotonic() + timeout
                while harness.unfinished(conn):
                    if time.monotonic() > deadline:
                        raise harness.BenchError(f"{setup}: {task} drain not done")
                    workers.check_alive()
                    most = max(most, server_sessions(conn))
                    time.sleep(poll)
                succeeded, _, seconds = harness.drain_window(conn)
                if succeeded != count:
                    raise harness.BenchError(
                        f"{setup}: {succeeded} of {count} succeeded"
                    )
                result[task] = {
                    "jobs": count,
                    "seconds": round(seconds, 3),
                    "rate": round(count / seconds, 2) if seconds else None,
                    "sessions_max": most,
                }
    finally:
        try:
            workers.stop()
        except harness.BenchError:
            workers.kill()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2000, help="no-op sync jobs per drain")
    p.add_argument("--cpu-jobs", type=int, default=400, help="20 ms CPU jobs per drain")
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--poll", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument(
        "--out", type=Path, default=REPO / "docs" / "benchmarks-pgbouncer.json"
    )
    args = p.parse_args(argv)
    db_url = os.environ.get("DATABASE_URL")
    if not db_url:
        print("pgbouncer.py: set DATABASE_URL", file=sys.stderr)
        return 2
    log: Callable[[str], None] = harness_log()
    workdir = harness.workdir()
    dbs = harness.Databases(db_url)
    out: dict[str, Any] = {
        "command": os.environ.get("BENCH_COMMAND")
        or "benchmarks/pgbouncer.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "machine_busy_at_start": round(harness.background_busy(3.0), 3),
        "loadavg_at_start": os.getloadavg(),
        "postgresql": dbs.server_version(),
        "pgbouncer": subprocess.run(
            [shutil.which("pgbouncer") or "/usr/sbin/pgbouncer", "--version"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.splitlines()[0:1],
        "children": CHILDREN,
        "pool_size": POOL_SIZE,
        "runs": [],
    }
    log("calibrating the CPU task")
    iters = round(20 * calibrate())
    drains = [
        ("noop_sync", {}, args.jobs),
        ("cpu", {"iterations": iters}, args.cpu_jobs),
    ]
    dbs.create_template()
    try:
        with pgbouncer(db_url) as port:
            for rep in range(args.reps):
                for setup in ("direct", "pgbouncer"):
                    with dbs.fresh() as url:
                        via = _port_url(url, port) if setup == "pgbouncer" else None
                        log(f"rep {rep + 1}/{args.reps}: {setup}")
                        run = run_once(
                            setup,
                            url,
                            via,
                            workdir,
                            drains,
                            args.settle,
                            args.poll,
                            args.timeout,
                        )
                        run["rep"] = rep
                        out["runs"].append(run)
                        log(f"  {run}")
    finally:
        dbs.drop_template()
        shutil.rmtree(workdir, ignore_errors=True)
    out["summary"] = summarize(out["runs"])
    out["finished_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"
    )
    out["loadavg_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    log(f"wrote {args.out}: {out['summary']}")
    return 0


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for setup in ("direct", "pgbouncer"):
        mine = [r for r in runs if r["setup"] == setup]
        entry: dict[str, Any] = {"sessions_idle": max(r["sessions_idle"] for r in mine)}
        for task in ("noop_sync", "cpu"):
            rates = [r[task]["rate"] for r in mine]
            entry[task] = {
                "rate_median": round(statistics.median(rates), 2),
                "rate_min": min(rates),
                "rate_max": max(rates),
                "sessions_max": max(r[task]["sessions_max"] for r in mine),
            }
        summary[setup] = entry
    return summary


if __name__ == "__main__":
    sys.exit(main())
