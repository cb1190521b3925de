"""Soak: the chaos test (tests/chaos_driver.py) for a configurable duration
and load, with a line of figures every --report-every seconds.

    scripts/soak.sh --minutes 60 --rate 20

A steady stream of mixed jobs (--rate per second) goes to --supervisors
fleets of --children children while a random child is SIGKILLed about every
--kill-interval seconds and, every --cycle-minutes, one supervisor is
SIGKILLed and restarted, two children are SIGSTOPped (one past
--child-timeout), PostgreSQL is restarted and stopped for a few seconds
while a supervisor is started in a loop (both only on the throwaway server of
scripts/pg.sh, which scripts/soak.sh starts when DATABASE_URL is unset), one
supervisor gets a burst of SIGHUPs, a stock procrastinate worker is SIGTERMed
mid-job and the fleet table is locked; queueing-lock jobs, hosts with
different stalled timeouts and time-limited jobs at --child-concurrency 2 run
throughout (the chaos test's attacks; --off leaves some out).

Each report line: elapsed time, jobs deferred and finished, throughput over
the last interval, child kills, recoveries and duplicates so far, and the
resident memory of every live child (MiB, min/median/max) and supervisor. At
the end, the chaos test's full books (every job in its expected state, no
rerun while the earlier run's process lived, locks, leftovers): exit 1 if a
problem was found. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg
from procrastinate import schema as procrastinate_schema

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from procrastinate_prefork.fleet import schema as prefork_schema  # noqa: E402
from tests.chaos_driver import (  # noqa: E402
    ATTACKS,
    ChaosConfig,
    ChaosRun,
    throwaway_pg,
)


@contextlib.contextmanager
def soak_database(pg_url: str, keep: bool) -> Iterator[str]:
    """A new database with procrastinate's schema and ours; dropped after."""
    name = f"prefork_soak_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = urlunsplit(urlsplit(pg_url)._replace(path="/" + name))
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(procrastinate_schema.SchemaManager.get_schema())  # type: ignore[arg-type]
            prefork_schema.apply(conn)
        yield url
    finally:
        if keep:
            print(f"soak: database kept: {url}", file=sys.stderr)
        else:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class LogCounter:
    """Counts lines containing given strings in the fleets' logs, reading
    only what was appended since the last call."""

    def __init__(self, *needles: str):
        self.needles = needles
        self.counts = dict.fromkeys(needles, 0)
        self._offsets: dict[Path, int] = {}

    def update(self, paths: list[Path]) -> dict[str, int]:
        for path in paths:
            offset = self._offsets.get(path, 0)
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except FileNotFoundError:
                continue
            complete = data[: data.rfind(b"\n") + 1]
            self._offsets[path] = offset + len(complete)
            text = complete.decode(errors="replace")
            for needle in self.needles:
                self.counts[needle] += text.count(needle)
        return self.counts


def mib(pid: int) -> float | None:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return None


class Reporter:
    def __init__(self, every: float):
        self.every = every
        self.next = time.monotonic() + every
        self.logs = LogCounter("Recovered job ", "killed by SIGKILL")
        self.last_done = 0
        self.last_time = time.monotonic()
        print(
            "  time  deferred  finished  jobs/s  kills  recov  dupl  "
            "child RSS MiB min/med/max  supervisors MiB",
            flush=True,
        )

    def __call__(self, run: ChaosRun) -> None:
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + self.every
        try:
            counts = run.counts()
        except psycopg.OperationalError:
            return  # PostgreSQL restarting: next time
        done = counts.get("succeeded", 0) + counts.get("failed", 0)
        rate = (done - self.last_done) / (now - self.last_time)
        self.last_done, self.last_time = done, now
        logs = self.logs.update([f.log_path for f in run.fleets])
        seen = run.observe()
        children = sorted(
            m for pids in seen.values() for pid in pids if (m := mib(pid)) is not None
        )
        supervisors = [m for pid in seen if (m := mib(pid)) is not None]
        child_rss = (
            f"{children[0]:.0f}/{statistics.median(children):.0f}/"
            f"{children[-1]:.0f} ({len(children)})"
            if children
            else "-"
        )
        print(
            f"{now - run.started:6.0f}  {run.deferred:8d}  {done:8d}  {rate:6.1f}  "
            f"{run.report.child_kills:5d}  {logs['Recovered job ']:5d}  "
            f"{duplicates(run):4d}  {child_rss:>26}  "
            f"{' '.join(f'{m:.0f}' for m in supervisors)}",
            flush=True,
        )


def duplicates(run: ChaosRun) -> int:
    """Completed runs followed by another run of the same job, so far."""
    run.markers.read()
    return sum(
        1
        for runs in run.markers.by_job().values()
        for earlier in runs[:-1]
        if earlier.outcome == "end"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--database-url", required=True, help="server to create the soak database on"
    )
    p.add_argument("--minutes", type=float, default=10.0, help="chaos duration")
    p.add_argument("--rate", type=float, default=20.0, help="jobs deferred per second")
    p.add_argument("--supervisors", type=int, default=3)
    p.add_argument("--children", type=int, default=4)
    p.add_argument("--child-concurrency", type=int, default=1)
    p.add_argument(
        "--kill-interval",
        type=float,
        default=0.5,
        help="seconds between random child SIGKILLs (0: none)",
    )
    p.add_argument(
        "--cycle-minutes",
        type=float,
        default=2.0,
        help="a supervisor kill, two SIGSTOPs and a PostgreSQL restart per cycle",
    )
    p.add_argument(
        "--no-db-restart", action="store_true", help="no PostgreSQL restart nor outage"
    )
    p.add_argument(
        "--off",
        default="",
        metavar="ATTACK,...",
        help=f"attacks to leave out, among: {', '.join(ATTACKS)}",
    )
    p.add_argument("--report-every", type=float, default=10.0, help="seconds")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--keep", action="store_true", help="keep the database and the logs")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    off = [name for name in args.off.split(",") if name]
    unknown = sorted(set(off) - set(ATTACKS))
    if unknown:
        parser.error(f"--off: unknown attack(s) {', '.join(unknown)}")
    restart_db = throwaway_pg() and not args.no_db_restart
    if not restart_db and not args.no_db_restart:
        print(
            "soak: DATABASE_URL is not the throwaway server: no PostgreSQL restarts",
            file=sys.stderr,
        )
    settings = dict(
        supervisors=args.supervisors,
        children=args.children,
        child_concurrency=args.child_concurrency,
        seconds=args.minutes * 60,
        rate=args.rate,
        jobs=0,
        kill_interval=args.kill_interval or float("inf"),
        restart_db=restart_db,
        db_outage=restart_db,
        repeat_every=args.cycle_minutes * 60,
        drain_timeout=600,
        seed=args.seed,
    )
    settings.update({name: 0 if name == "sighup_burst" else False for name in off})
    config = ChaosConfig(**settings)  # type: ignore[arg-type]
    workdir = Path(tempfile.mkdtemp(prefix="prefork-soak-"))
    print(
        f"soak: {args.minutes:g} min, {args.rate:g} jobs/s, {args.supervisors} "
        f"supervisors x {args.children} children; logs and markers in {workdir}",
        flush=True,
    )
    with soak_database(args.database_url, keep=args.keep) as url:
        run = ChaosRun(
            url, workdir, config, say=lambda text: print(f"        {text}", flush=True)
        )
        report = run.execute(on_tick=Reporter(args.report_every))
    print(report.summary(), flush=True)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
