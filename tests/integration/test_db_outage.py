"""Database outages: PostgreSQL restarted, then stopped for 30 s, under two
supervisors (two host names) with jobs running.

The fleet must ride them out: children are not re-forked in a storm (at most
one re-fork per slot, none expected), /ready answers 503 while the database is
unreachable and 200 once it is back (/live stays 200: restarting the pod would
not help), no job is lost, and no job runs twice unless the process of its
earlier run died. These restart the server behind DATABASE_URL: they only run
on the throwaway server of scripts/test.sh.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from ..chaos_driver import MarkerReader, ProcessWatch, pg_ctl, throwaway_pg
from ..fleet_helper import defer, jobs, wait_for
from .test_health import free_port, probe, try_probe

pytestmark = pytest.mark.skipif(
    not throwaway_pg(),
    reason="restarts PostgreSQL: needs the throwaway server of scripts/test.sh "
    "(PROCRASTINATE_PREFORK_THROWAWAY_PG=1)",
)

CHAOS_APP = "tests.apps.chaos_app.app"
CHILDREN = 2
OUTAGE = 30.0
ARGS = (
    "--concurrency",
    str(CHILDREN),
    "--heartbeat-interval",
    "1",
    "--stalled-timeout",
    "5",
    "--child-timeout",
    "5",
    "--fetch-job-polling-interval",
    "2",
)


class Outage:
    """Two fleets with probe ports, the markers of their runs, their pids."""

    def __init__(self, fleet_factory, tmp_path):
        self.results = tmp_path / "markers"
        self.results.mkdir()
        self.markers = MarkerReader(self.results)
        self.watch = ProcessWatch()
        self.ports = [free_port(), free_port()]
        self.fleets = []
        for i, port in enumerate(self.ports):
            fleet = fleet_factory.new(f"host-{i}")
            fleet.start(
                *ARGS,
                "--hostname",
                f"outage-host-{i}",
                "--health-port",
                str(port),
                app=CHAOS_APP,
                env={"PREFORK_TEST_RESULTS": str(self.results)},
            )
            self.fleets.append(fleet)
        self.initial = self.children()

    def children(self) -> set[int]:
        seen = self.watch.observe([f.pid for f in self.fleets])
        return {pid for pids in seen.values() for pid in pids}

    def watch_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.children()
            time.sleep(0.25)

    def ready(self) -> list[int | None]:
        return [
            (r[0] if (r := try_probe(port, "/ready")) else None) for port in self.ports
        ]

    def check(self, db_url: str, ids: list[int]) -> None:
        """Every job succeeded, none ran again while the process of its
        earlier run lived, no re-fork storm, fresh fleet rows."""
        wait_for(
            lambda: all(r["status"] == "succeeded" for r in jobs(db_url, ids)),
            timeout=90,
            interval=0.5,
            message="every job to succeed",
        )
        self.markers.read()
        assert not self.markers.anomalies
        live = self.children() | {f.pid for f in self.fleets}
        for job_id, runs in self.markers.by_job().items():
            assert runs[-1].outcome == "end", (job_id, runs)
            for earlier in runs[:-1]:
                assert earlier.pid not in live, (
                    f"job {job_id} ran again while pid {earlier.pid} lived: {runs}"
                )
        assert set(self.markers.by_job()) == set(ids)
        forked = len(self.watch.last_seen) - len(self.fleets)
        slots = CHILDREN * len(self.fleets)
        assert forked <= 2 * slots, (
            f"{forked} children for {slots} slots: a re-fork storm"
        )
        for fleet in self.fleets:
            assert fleet.events("crash_loop") == []
            assert not fleet.exited()
        with psycopg.connect(db_url, autocommit=True) as conn:
            ages = conn.execute(
                "SELECT EXTRACT(EPOCH FROM now() - last_heartbeat)::float8 "
                "FROM procrastinate_prefork_processes "
                "WHERE kind = 'supervisor' AND pid = ANY(%s)",
                [[f.pid for f in self.fleets]],
            ).fetchall()
        assert len(ages) == 2 and all(age < 5 for (age,) in ages), ages

    def stop(self) -> None:
        for fleet in self.fleets:
            assert fleet.stop(timeout=60) == 0, fleet.log()[-3000:]


def test_postgres_restart_under_load(fleet_factory, db_url, tmp_path):
    outage = Outage(fleet_factory, tmp_path)
    ids = defer(db_url, "chaos_sleep", count=60, seconds=0.2)
    ids += defer(db_url, "chaos_async", count=20, seconds=0.3)
    wait_for(
        lambda: len(outage.markers.read()) and len(outage.markers.runs) >= 10,
        message="jobs to flow",
    )
    pg_ctl("restart", "-m", "fast", "-w")
    outage.watch_for(2)
    ids += defer(db_url, "chaos_cpu", count=20, ms=10)
    outage.check(db_url, ids)
    wait_for(lambda: outage.ready() == [200, 200], timeout=20, message="/ready 200")
    forked = (
        outage.watch.last_seen.keys() - outage.initial - {f.pid for f in outage.fleets}
    )
    print(f"children re-forked across the restart: {len(forked)}")
    outage.stop()


def test_thirty_second_outage(fleet_factory, db_url, tmp_path):
    outage = Outage(fleet_factory, tmp_path)
    assert outage.ready() == [200, 200]
    # jobs running through the whole outage (and far longer than
    # --stalled-timeout): no sweeper may take them for stalled once the
    # database is back; and short ones queued behind them
    long_ids = defer(db_url, "chaos_sleep", count=2 * CHILDREN, seconds=OUTAGE + 8)
    wait_for(
        lambda: (
            outage.markers.read() is not None
            and len(outage.markers.runs) == 2 * CHILDREN
        ),
        message="the long jobs to start on every child",
    )
    short_ids = defer(db_url, "chaos_sleep", count=20, seconds=0.1)
    pg_ctl("stop", "-m", "fast", "-w")
    stopped = time.monotonic()
    try:
        wait_for(
            lambda: outage.ready() == [503, 503],
            timeout=10,
            message="/ready to fail during the outage",
        )
        print(f"/ready 503 {time.monotonic() - stopped:.1f} s into the outage")
        for port in outage.ports:
            assert "database unreachable" in probe(port, "/ready")[1]["reasons"]
            assert probe(port, "/live")[0] == 200  # a restart would not help
        outage.watch_for(OUTAGE - (time.monotonic() - stopped))
        assert outage.ready() == [503, 503]
    finally:
        pg_ctl("start", "-w")
    back = time.monotonic()
    wait_for(
        lambda: outage.ready() == [200, 200],
        timeout=30,
        interval=0.2,
        message="/ready to recover",
    )
    print(f"/ready 200 again {time.monotonic() - back:.1f} s after the database")
    after_ids = defer(db_url, "chaos_cpu", count=20, ms=10)
    outage.check(db_url, long_ids + short_ids + after_ids)
    during = (
        outage.watch.last_seen.keys() - outage.initial - {f.pid for f in outage.fleets}
    )
    print(f"children re-forked during the outage: {len(during)}")
    outage.stop()
