"""The chaos driver: several supervisors on one database, mixed jobs, and a
driver that kills children and supervisors, freezes children and restarts
PostgreSQL while the jobs run; then the books are checked.

Used by ``tests/acceptance/test_chaos.py`` (a short run in CI) and by
``benchmarks/soak.py`` (``scripts/soak.sh``: a long run with periodic reports).

What a run checks (``ChaosReport.problems``):

* every job ends in the status its task implies (``tests/apps/chaos_app.py``),
  none ``todo`` or ``doing``, every job started at least once;
* a job ran again only after the process of its earlier run was gone: an
  *interrupted* run (a ``start`` marker, no ``end``/``raise``) or a run that
  *completed* but whose outcome was never recorded (a ``duplicate``: the
  at-least-once case) must belong to a process that died, and the next run
  must start after the last time the driver saw that process alive;
* two jobs of one procrastinate ``lock`` never ran at the same time;
* no process of the fleet is left once it stopped, every supervisor exited 0,
  and the fleet table holds no live-looking row.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg.rows import dict_row

from .apps.chaos_app import EXPECTED_STATUS
from .fleet_helper import REPO, Fleet

CHAOS_APP = "tests.apps.chaos_app.app"
#: task name -> share of the jobs
MIX = {
    "chaos_cpu": 0.30,
    "chaos_sleep": 0.15,
    "chaos_async": 0.15,
    "chaos_locked": 0.15,
    "chaos_flaky": 0.15,
    "chaos_fail": 0.10,
}
LOCKS = 6  # distinct lock strings the locked jobs share


def throwaway_pg() -> bool:
    """Whether the server behind DATABASE_URL may be restarted (scripts/test.sh
    sets this when it started the server for the run)."""
    return bool(os.environ.get("PROCRASTINATE_PREFORK_THROWAWAY_PG"))


def pg_ctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``scripts/pg.sh ctl ...`` on the server of $PGPORT_THROWAWAY."""
    return subprocess.run(
        [str(REPO / "scripts" / "pg.sh"), "ctl", *args],
        capture_output=True, text=True, timeout=timeout, check=True,
    )


@dataclasses.dataclass
class ChaosConfig:
    supervisors: int = 3
    children: int = 4
    child_concurrency: int = 1
    jobs: int = 600
    #: seconds of chaos; the jobs are deferred over its first 80 %
    seconds: float = 30.0
    kill_interval: float = 0.5  # a random child SIGKILLed about this often
    kill_supervisor: bool = True
    stop_children: bool = True
    restart_db: bool = True
    stalled_timeout: float = 6.0
    heartbeat_interval: float = 1.0
    child_timeout: float = 3.0
    polling_interval: float = 2.0
    drain_timeout: float = 180.0  # after the chaos, for the last jobs
    seed: int | None = None
    #: continuous load for the soak: jobs per second (0: ``jobs`` in all)
    rate: float = 0.0
    #: for the soak: repeat the supervisor kill, the SIGSTOPs and the
    #: PostgreSQL restart every this many seconds (0: once, in ``seconds``)
    repeat_every: float = 0.0

    @classmethod
    def from_env(cls, **overrides: Any) -> ChaosConfig:
        """CHAOS_JOBS, CHAOS_SECONDS, CHAOS_SEED override the defaults; the
        seed is drawn at random unless given (the report shows it: the job
        mix and the victims repeat with it, the timings do not)."""
        env = {
            "jobs": int(os.environ.get("CHAOS_JOBS", cls.jobs)),
            "seconds": float(os.environ.get("CHAOS_SECONDS", cls.seconds)),
            "seed": int(os.environ.get("CHAOS_SEED") or random.randrange(10**6)),
        }
        return cls(**{**env, **overrides})

    def fleet_args(self, hostname: str) -> list[str]:
        return [
            "--concurrency", str(self.children),
            "--child-concurrency", str(self.child_concurrency),
            "--hostname", hostname,
            "--stalled-timeout", str(self.stalled_timeout),
            "--heartbeat-interval", str(self.heartbeat_interval),
            "--child-timeout", str(self.child_timeout),
            "--fetch-job-polling-interval", str(self.polling_interval),
            # the final state of every job must not depend on how often a
            # random kill hits it
            "--max-crash-retries", "1000",
            "--shutdown-graceful-timeout", "20",
        ]


# ------------------------------------------------------------------ markers


@dataclasses.dataclass
class Run:
    job_id: int
    attempt: int
    pid: int
    start: float
    lock: str | None
    outcome: str | None = None  # "end", "raise" or None (interrupted)
    finish: float | None = None


class MarkerReader:
    """Reads the per-process marker files of ``chaos_app`` incrementally."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._offsets: dict[Path, int] = {}
        self.runs: dict[tuple[int, int, int], Run] = {}
        self.anomalies: list[str] = []

    def read(self) -> list[Run]:
        """Parse what was appended since the last call; returns the runs
        that got a start or an outcome."""
        touched: list[Run] = []
        for path in sorted(self.directory.glob("chaos-*.log")):
            offset = self._offsets.get(path, 0)
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]
            self._offsets[path] = offset + len(complete)
            for line in complete.decode().splitlines():
                event, job_id, attempt, pid, at, lock = line.split()
                key = (int(job_id), int(attempt), int(pid))
                if event == "start":
                    if key in self.runs:
                        self.anomalies.append(f"run {key} started twice")
                    self.runs[key] = Run(*key, start=float(at),
                                         lock=None if lock == "-" else lock)
                    touched.append(self.runs[key])
                else:
                    run = self.runs.get(key)
                    if run is None:
                        self.anomalies.append(f"{event} without start: {key}")
                        continue
                    run.outcome, run.finish = event, float(at)
                    touched.append(run)
        return touched

    def by_job(self) -> dict[int, list[Run]]:
        jobs: dict[int, list[Run]] = defaultdict(list)
        for run in self.runs.values():
            jobs[run.job_id].append(run)
        for runs in jobs.values():
            runs.sort(key=lambda r: r.start)
        return jobs


# ---------------------------------------------------------------- processes


class ProcessWatch:
    """When the driver last saw each process of the fleet alive."""

    def __init__(self) -> None:
        self.last_seen: dict[int, float] = {}
        self.gone_at: dict[int, float] = {}
        self.parent: dict[int, int] = {}  # child pid -> supervisor pid
        self.killed: dict[int, str] = {}  # pid -> why the driver killed it

    def observe(self, supervisors: list[int]) -> dict[int, list[int]]:
        now = time.time()
        seen: dict[int, list[int]] = {}
        alive: set[int] = set()
        for sup in supervisors:
            try:
                process = psutil.Process(sup)
                children = [
                    c.pid for c in process.children()
                    if c.status() != psutil.STATUS_ZOMBIE
                ]
                if process.status() == psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:
                continue
            alive.add(sup)
            alive.update(children)
            seen[sup] = children
            for pid in children:
                self.parent[pid] = sup
        for pid in alive:
            self.last_seen[pid] = now
            self.gone_at.pop(pid, None)
        for pid in self.last_seen:
            if pid not in alive and pid not in self.gone_at:
                self.gone_at[pid] = now
        return seen


def _title(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# ------------------------------------------------------------------ report


@dataclasses.dataclass
class ChaosReport:
    jobs: int = 0
    by_task: dict[str, int] = dataclasses.field(default_factory=dict)
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)
    runs: int = 0
    child_kills: int = 0
    supervisor_kills: int = 0
    children_lost_with_supervisor: int = 0
    sigstops: int = 0
    wedged_kills: int = 0
    db_restarts: int = 0
    other_child_deaths: int = 0
    children_forked: int = 0
    recoveries: int = 0
    interrupted_reruns: int = 0
    duplicates: int = 0
    lost: int = 0
    wrong_status: int = 0
    seconds: float = 0.0
    throughput: float = 0.0
    problems: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"jobs: {self.jobs} {dict(sorted(self.by_task.items()))}",
            f"final statuses: {dict(sorted(self.statuses.items()))}",
            f"runs: {self.runs} in {self.seconds:.1f} s "
            f"({self.throughput:.1f} jobs/s)",
            f"kills: {self.child_kills} children SIGKILLed, {self.supervisor_kills} "
            f"supervisor(s) SIGKILLed (taking {self.children_lost_with_supervisor} "
            f"children), {self.sigstops} SIGSTOPs ({self.wedged_kills} killed as "
            f"wedged), {self.db_restarts} PostgreSQL restart(s)",
            f"children forked: {self.children_forked}; other child deaths: "
            f"{self.other_child_deaths}",
            f"recoveries logged: {self.recoveries}; interrupted runs run again: "
            f"{self.interrupted_reruns}; duplicates (completed, then run again "
            f"after a kill): {self.duplicates}",
            f"lost: {self.lost}; wrong final status: {self.wrong_status}",
        ]
        if self.problems:
            lines.append(f"PROBLEMS ({len(self.problems)}):")
            lines.extend(f"  {p}" for p in self.problems[:40])
        return "\n".join(lines)


# ------------------------------------------------------------------- driver


class ChaosRun:
    def __init__(
        self, db_url: str, workdir: Path, config: ChaosConfig,
        say: Callable[[str], None] = lambda text: None,
    ):
        self.db_url = db_url
        self.workdir = workdir
        self.config = config
        self.say = say
        self.rng = random.Random(config.seed)
        self.tag = f"chaos{os.getpid()}x{self.rng.randrange(10**6)}"
        self.results = workdir / "markers"
        self.results.mkdir(parents=True, exist_ok=True)
        self.fleets: list[Fleet] = []  # every supervisor started, in order
        self.current: dict[str, Fleet] = {}  # hostname -> its live supervisor
        self.markers = MarkerReader(self.results)
        self.watch = ProcessWatch()
        self.report = ChaosReport()
        self.deferred = 0
        self.job_ids: list[int] = []
        self._stopped: dict[int, float] = {}  # SIGSTOPped pid -> SIGCONT time
        self._pg: subprocess.Popen[str] | None = None
        self._final_live: frozenset[int] = frozenset()  # see snapshot_live
        self.started = 0.0

    # --- fleet

    def hostnames(self) -> list[str]:
        return [f"{self.tag}-h{i}" for i in range(self.config.supervisors)]

    def start_supervisor(self, hostname: str, wait_ready: bool = False) -> Fleet:
        fleet = Fleet(self.db_url, self.workdir, f"{hostname}-{len(self.fleets)}")
        fleet.start(
            *self.config.fleet_args(hostname), app=CHAOS_APP, wait_ready=wait_ready,
            env={"PREFORK_TEST_RESULTS": str(self.results)},
        )
        self.fleets.append(fleet)
        self.current[hostname] = fleet
        return fleet

    def start(self) -> None:
        for hostname in self.hostnames():
            self.start_supervisor(hostname)
        for fleet in self.current.values():
            fleet.wait_ready(timeout=60)
        self.observe()

    def supervisor_pids(self) -> list[int]:
        return [f.pid for f in self.current.values() if not f.exited()]

    def observe(self) -> dict[int, list[int]]:
        return self.watch.observe(self.supervisor_pids())

    def live_children(self) -> list[int]:
        return [
            pid for pids in self.observe().values() for pid in pids
            if pid not in self._stopped
        ]

    # --- jobs

    def defer(self, count: int) -> list[int]:
        """Insert ``count`` jobs of the mix in one statement, the way
        procrastinate's defer does; returns their ids."""
        names, locks, args = [], [], []
        tasks = list(MIX)
        weights = [MIX[t] for t in tasks]
        for _ in range(count):
            task = self.rng.choices(tasks, weights)[0]
            lock = None
            if task == "chaos_cpu":
                params: dict[str, Any] = {"ms": self.rng.randint(5, 60)}
            elif task == "chaos_sleep":
                params = {"seconds": round(self.rng.uniform(0.2, 1.5), 3)}
            elif task == "chaos_async":
                params = {"seconds": round(self.rng.uniform(0.1, 1.0), 3)}
            elif task == "chaos_locked":
                params = {"seconds": round(self.rng.uniform(0.05, 0.4), 3)}
                lock = f"{self.tag}-lock-{self.rng.randrange(LOCKS)}"
            else:
                params = {"ms": self.rng.randint(1, 10)}
            names.append(task)
            locks.append(lock)
            args.append(json.dumps(params))
        with psycopg.connect(self.db_url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT procrastinate_defer_jobs_v1(array_agg(ROW("
                "  'default', t.task, 0, t.lock, NULL, t.args::jsonb, NULL"
                ")::procrastinate_job_to_defer_v1 ORDER BY t.n)) "
                "FROM unnest(%s::text[], %s::text[], %s::text[]) "
                "WITH ORDINALITY AS t(task, lock, args, n)",
                [names, locks, args],
            ).fetchone()
        assert row is not None
        ids = list(row[0])
        self.job_ids.extend(ids)
        self.deferred += len(ids)
        return ids

    def counts(self) -> dict[str, int]:
        with psycopg.connect(self.db_url, autocommit=True, connect_timeout=5) as conn:
            return dict(conn.execute(
                "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1"
            ).fetchall())

    # --- chaos actions

    def kill_random_child(self) -> int | None:
        children = self.live_children()
        if not children:
            return None
        victim = self.rng.choice(children)
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            return None
        self.watch.killed[victim] = "SIGKILL"
        self.report.child_kills += 1
        return victim

    def kill_supervisor(self, hostname: str) -> None:
        """SIGKILL the supervisor of ``hostname`` (its children die with it)
        and start a new one under the same host name."""
        fleet = self.current[hostname]
        children = self.observe().get(fleet.pid, [])
        os.kill(fleet.pid, signal.SIGKILL)
        fleet.wait(timeout=10)
        self.watch.killed[fleet.pid] = "supervisor SIGKILL"
        for pid in children:
            self.watch.killed.setdefault(pid, "its supervisor was SIGKILLed")
        self.report.supervisor_kills += 1
        self.report.children_lost_with_supervisor += len(children)
        self.say(f"SIGKILLed supervisor {fleet.pid} of {hostname} "
                 f"({len(children)} children); starting it again")
        self.start_supervisor(hostname)

    def stop_child(self, seconds: float) -> int | None:
        """SIGSTOP a child, busy with a job if one is, for ``seconds``."""
        children = self.live_children()
        if not children:
            return None
        busy = [pid for pid in children if "[busy" in _title(pid)]
        victim = self.rng.choice(busy or children)
        try:
            os.kill(victim, signal.SIGSTOP)
        except ProcessLookupError:
            return None
        self._stopped[victim] = time.monotonic() + seconds
        self.report.sigstops += 1
        self.say(f"SIGSTOPped child {victim} for {seconds:g} s")
        return victim

    def _continue_stopped(self, force: bool = False) -> None:
        for pid, when in list(self._stopped.items()):
            if force or time.monotonic() >= when:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                del self._stopped[pid]

    def restart_db(self) -> None:
        """``pg_ctl restart -m fast`` in the background: the driver goes on."""
        self.say("restarting PostgreSQL")
        self._pg = subprocess.Popen(
            [str(REPO / "scripts" / "pg.sh"), "ctl", "restart", "-m", "fast", "-w"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.report.db_restarts += 1

    def _db_restart_done(self) -> bool:
        if self._pg is None:
            return True
        if self._pg.poll() is None:
            return False
        output = self._pg.stdout.read() if self._pg.stdout else ""
        if self._pg.returncode != 0:
            raise RuntimeError(f"pg.sh ctl restart failed: {output}")
        self._pg = None
        return True

    # --- the run

    def schedule(self) -> list[tuple[float, str]]:
        """(seconds into the chaos, action), in order: once in the chaos
        window, or once per ``repeat_every`` seconds."""
        cycle = []
        if self.config.kill_supervisor:
            cycle.append((0.25, "kill_supervisor"))
        if self.config.stop_children:
            cycle.append((0.40, "stop_long"))  # past --child-timeout: killed as wedged
            cycle.append((0.55, "stop_short"))  # resumed before --child-timeout
        if self.config.restart_db:
            cycle.append((0.70, "restart_db"))
        period = self.config.repeat_every or self.config.seconds
        plan = []
        cycle_start = 0.0
        while cycle_start + period <= self.config.seconds + 1e-9:
            plan.extend((cycle_start + at * period, action) for at, action in cycle)
            cycle_start += period
        return plan

    def run_chaos(self, on_tick: Callable[[ChaosRun], None] | None = None) -> None:
        """Defer the jobs and wreak havoc for ``config.seconds``."""
        config = self.config
        start = self.started = time.monotonic()
        end = start + config.seconds
        plan = self.schedule()
        next_kill = start + config.kill_interval
        next_defer = start
        defer_until = start + 0.8 * config.seconds
        while (now := time.monotonic()) < end:
            self._continue_stopped()
            self.markers.read()
            if now >= next_defer and self._db_restart_done():
                if config.rate:
                    batch = max(1, round(config.rate * 0.5))
                else:
                    batches_left = max(1, round((defer_until - now) / 0.5))
                    batch = -(-(config.jobs - self.deferred) // batches_left)
                if batch > 0:
                    try:
                        self.defer(batch)
                    except psycopg.OperationalError:
                        pass  # the database is restarting: next time
                next_defer = now + 0.5
            if plan and now >= start + plan[0][0]:
                _, action = plan.pop(0)
                if action == "kill_supervisor":
                    self.kill_supervisor(self.rng.choice(self.hostnames()))
                elif action == "stop_long":
                    self.stop_child(config.child_timeout + 2)
                elif action == "stop_short":
                    self.stop_child(config.child_timeout / 3)
                elif action == "restart_db":
                    self.restart_db()
            if now >= next_kill:
                self.kill_random_child()
                next_kill = now + config.kill_interval * self.rng.uniform(0.6, 1.4)
            if on_tick is not None:
                on_tick(self)
            time.sleep(0.05)
        self._continue_stopped(force=True)
        while not self._db_restart_done():
            time.sleep(0.1)

    def drain(self) -> None:
        """Wait until no job is left ``todo`` or ``doing``."""
        deadline = time.monotonic() + self.config.drain_timeout
        while True:
            self.observe()
            self.markers.read()
            try:
                counts = self.counts()
            except psycopg.OperationalError:
                counts = {"todo": -1}
            if not counts.get("todo") and not counts.get("doing"):
                return
            if time.monotonic() > deadline:
                self.report.problems.append(
                    f"jobs still pending {self.config.drain_timeout:g} s after the "
                    f"chaos: {counts}")
                return
            time.sleep(0.5)

    def check_fleet_table_live(self) -> None:
        """Every live supervisor's row is fresh and running."""
        with psycopg.connect(self.db_url, autocommit=True) as conn, \
                conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT pid, host, state, "
                "EXTRACT(EPOCH FROM now() - last_heartbeat)::float8 AS age "
                "FROM procrastinate_prefork_processes WHERE kind = 'supervisor'"
            ).fetchall()
        live = {f.pid: h for h, f in self.current.items() if not f.exited()}
        for pid, host in live.items():
            mine = [r for r in rows if r["pid"] == pid and r["host"] == host]
            if len(mine) != 1:
                self.report.problems.append(f"supervisor {pid} on {host}: {len(mine)} rows")
                continue
            row = mine[0]
            if row["state"] != "running" or row["age"] > self.config.stalled_timeout:
                self.report.problems.append(
                    f"supervisor {pid} on {host}: state {row['state']}, "
                    f"heartbeat {row['age']:.1f} s old")
        for row in rows:
            if row["pid"] not in live and row["state"] != "stopped":
                self.report.problems.append(
                    f"dead supervisor {row['pid']} on {row['host']} still "
                    f"'{row['state']}' in the fleet table")

    def stop(self) -> None:
        """SIGTERM every live supervisor; each must drain and exit 0."""
        self._continue_stopped(force=True)
        self.observe()
        live = [f for f in self.current.values() if not f.exited()]
        for fleet in live:
            fleet.signal(signal.SIGTERM)
        for fleet in live:
            try:
                code = fleet.wait(timeout=60)
            except subprocess.TimeoutExpired:
                fleet.kill_all()
                code = None
            if code != 0:
                self.report.problems.append(
                    f"supervisor {fleet.pid} ({fleet.name}) exited with {code}")

    def leftovers(self) -> list[str]:
        """Processes of this run still alive (by pid and by title)."""
        left = []
        for pid in self.watch.last_seen:
            if pid_alive(pid):
                left.append(f"pid {pid} still alive")
        for process in psutil.process_iter(["pid", "cmdline"]):
            try:
                title = " ".join(process.info["cmdline"] or [])
                if self.tag in title and process.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"pid {process.pid} still alive: {title}")
            except psutil.Error:
                continue
        return sorted(set(left))

    def cleanup(self) -> None:
        """Whatever happened: no process of this run survives it."""
        self._continue_stopped(force=True)
        if self._pg is not None:
            self._pg.wait(timeout=120)
        for fleet in self.fleets:
            if fleet.proc is not None and fleet.proc.poll() is None:
                fleet.kill_all()
        for pid in self.watch.last_seen:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # --- the books

    def logs(self) -> Iterator[str]:
        for fleet in self.fleets:
            yield fleet.log()

    def analyze(self) -> ChaosReport:
        report = self.report
        self.markers.read()
        report.problems.extend(self.markers.anomalies)
        with psycopg.connect(self.db_url, autocommit=True) as conn, \
                conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT id, task_name, status::text AS status, attempts "
                "FROM procrastinate_jobs ORDER BY id").fetchall()
            fleet_rows = cur.execute(
                "SELECT kind, pid, host, state FROM procrastinate_prefork_processes "
                "WHERE state <> 'stopped'").fetchall()
        report.jobs = len(rows)
        report.by_task = dict(Counter(r["task_name"] for r in rows))
        report.statuses = dict(Counter(r["status"] for r in rows))
        if report.jobs != self.deferred:
            report.problems.append(f"{self.deferred} jobs deferred, {report.jobs} in the table")
        for row in fleet_rows:
            report.problems.append(
                f"fleet table: {row['kind']} pid {row['pid']} on {row['host']} still "
                f"'{row['state']}' after the stop")
        runs_by_job = self.markers.by_job()
        report.runs = len(self.markers.runs)
        for row in rows:
            expected = EXPECTED_STATUS[row["task_name"]]
            runs = runs_by_job.get(row["id"], [])
            if row["status"] in ("todo", "doing"):
                report.lost += 1
                report.problems.append(f"job {row['id']} ({row['task_name']}) left {row['status']}")
            elif row["status"] != expected:
                report.wrong_status += 1
                report.problems.append(
                    f"job {row['id']} ({row['task_name']}) ended {row['status']}, "
                    f"expected {expected}")
            if not runs:
                report.lost += 1
                report.problems.append(f"job {row['id']} ({row['task_name']}) never ran")
                continue
            last = runs[-1]
            if row["status"] == "succeeded" and last.outcome != "end":
                report.problems.append(
                    f"job {row['id']} succeeded but its last run ended {last.outcome}")
            self._check_reruns(row["id"], runs)
        self._check_locks(runs_by_job)
        self._count_processes()
        report.seconds = max(
            (r.finish or r.start for r in self.markers.runs.values()), default=0
        ) - min((r.start for r in self.markers.runs.values()), default=0)
        done = sum(1 for r in rows if r["status"] in ("succeeded", "failed"))
        report.throughput = done / report.seconds if report.seconds else 0.0
        return report

    def _check_reruns(self, job_id: int, runs: list[Run]) -> None:
        report = self.report
        for earlier, later in itertools.pairwise(runs):
            if earlier.outcome == "raise":
                continue  # the task's retry strategy at work
            kind = "duplicate" if earlier.outcome == "end" else "interrupted"
            if kind == "duplicate":
                report.duplicates += 1
            else:
                report.interrupted_reruns += 1
            pid = earlier.pid
            seen = self.watch.last_seen.get(pid)
            if pid in self._final_live:
                report.problems.append(
                    f"job {job_id}: run {earlier.attempt} ({kind}) on pid {pid}, which "
                    f"was still alive at the end, was run again (attempt {later.attempt})")
            elif seen is not None and later.start < seen - 0.05:
                report.problems.append(
                    f"job {job_id}: run again at {later.start:.3f} while pid {pid} of "
                    f"its earlier run ({kind}) was still alive at {seen:.3f}")

    def _check_locks(self, runs_by_job: dict[int, list[Run]]) -> None:
        by_lock: dict[str, list[Run]] = defaultdict(list)
        for runs in runs_by_job.values():
            for run in runs:
                if run.lock:
                    by_lock[run.lock].append(run)
        for lock, runs in by_lock.items():
            runs.sort(key=lambda r: r.start)
            for earlier, later in itertools.pairwise(runs):
                if earlier.finish is not None:
                    busy_until = earlier.finish
                else:  # interrupted: its process was alive at least until then
                    busy_until = self.watch.last_seen.get(earlier.pid, earlier.start)
                if later.start < busy_until - 0.05:
                    self.report.problems.append(
                        f"lock {lock}: job {later.job_id} started at {later.start:.3f} "
                        f"while job {earlier.job_id} held it until {busy_until:.3f}")

    def _count_processes(self) -> None:
        report = self.report
        text = "\n".join(self.logs())
        report.recoveries = text.count("Recovered job ")
        report.wedged_kills = sum(
            1 for line in text.splitlines()
            if "wedged: no sign of life" in line and line.endswith(", SIGKILL")
        )
        report.children_forked = len(
            [line for line in text.splitlines()
             if "procrastinate_prefork.supervisor: Child " in line and " started (pid " in line]
        )
        supervisors = {f.pid for f in self.fleets}
        report.other_child_deaths = sum(
            1 for pid in self.watch.gone_at
            if pid not in supervisors and pid not in self.watch.killed
            and pid not in self._final_live
        )

    def snapshot_live(self) -> None:
        """The fleet's processes alive just before the final stop: a job run
        by one of them must never have run again."""
        seen = self.observe()
        self._final_live = frozenset(
            [*seen, *(pid for pids in seen.values() for pid in pids)]
        )

    def execute(self, on_tick: Callable[[ChaosRun], None] | None = None) -> ChaosReport:
        """The whole run: start, chaos, drain, checks, stop, books."""
        try:
            self.start()
            self.run_chaos(on_tick)
            if not self.config.rate:  # every job deferred
                missing = self.config.jobs - self.deferred
                if missing > 0:
                    self.defer(missing)
            self.say("chaos over; waiting for the last jobs")
            self.drain()
            time.sleep(2 * self.config.heartbeat_interval)
            self.snapshot_live()
            self.check_fleet_table_live()
            self.stop()
            left = self.leftovers()
            self.report.problems.extend(f"left behind: {p}" for p in left)
            return self.analyze()
        finally:
            self.cleanup()
