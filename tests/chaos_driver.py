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
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg.rows import dict_row

from .apps.chaos_app import EXPECTED_STATUS
from .blackhole import BlackHole
from .chaos_log_pipe import PIPE_ENV, LogPipe, stray_supervisor_records
from .chaos_pools import (
    ASYNC_QUEUE,
    POOL_ROLES,
    PoolPlan,
    child_pools,
    host_pools,
    misrouted,
    runs_by_pool,
    size_after_ttou,
)
from .fleet_helper import REPO, Fleet, free_port, http_status, is_probe_process

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
#: (queue, task, lock, queueing_lock, json args) of a job to defer
JobRow = tuple[str, str, str | None, str | None, str]
QUEUEING_LOCKS = 3  # distinct queueing_lock (= lock) values of chaos_queued
#: A recovered queueing-lock job may find another job of its queueing lock
#: already ``todo``: it cannot go back to ``todo`` itself, and ``failed`` is a
#: defined outcome for it (issue 11, A). Never ``todo`` or ``doing`` for good.
QUEUEING_LOCK_STATUSES = frozenset({"succeeded", "failed"})


def overrun_seconds(long: bool, limit: float, rng: random.Random) -> float:
    """How long a ``chaos_overrun`` job sleeps: 3 x its limit (it must end
    ``failed``, stopped by the limit) or well within it (it must succeed,
    whatever ran beside it)."""
    if long:
        return round(3 * limit, 3)
    return round(rng.uniform(0.05, 0.25) * limit, 3)


def time_limit_blames(events: list[dict[str, Any]]) -> list[int]:
    """Job ids the supervisors' ``time_limit`` events name as past their time
    limit: one event per job a limit was enforced on."""
    return [int(e["job_id"]) for e in events if e.get("action") == "time_limit"]


#: a count of children must hold this long to count as converged (a random
#: kill makes it dip for a moment; a stacked rolling restart passes through it)
SETTLE_SECONDS = 3.0


class Steady:
    """Whether a sampled value has stayed at ``target`` for ``seconds``."""

    def __init__(self, target: int, seconds: float):
        self.target = target
        self.seconds = seconds
        self.since: float | None = None

    def update(self, value: int, now: float) -> bool:
        if value != self.target:
            self.since = None
            return False
        if self.since is None:
            self.since = now
        return now - self.since >= self.seconds


_EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception|Violation)\b")


def last_error_line(log: str) -> str:
    """The last line of a log naming an exception (else its last line), for a
    one-line problem."""
    lines = log.strip().splitlines()
    errors = [line for line in lines if _EXCEPTION_LINE.match(line)]
    return (errors or lines or [""])[-1][:300]


def wrongly_blamed(blamed: list[int], long: set[int]) -> list[int]:
    """Blamed jobs that were not deferred to overrun their limit."""
    return sorted(set(blamed) - long)


def throwaway_pg() -> bool:
    """Whether the server behind DATABASE_URL may be restarted (scripts/test.sh
    sets this when it started the server for the run)."""
    return bool(os.environ.get("PROCRASTINATE_PREFORK_THROWAWAY_PG"))


def pg_ctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``scripts/pg.sh ctl ...`` on the server of $PGPORT_THROWAWAY."""
    return subprocess.run(
        [str(REPO / "scripts" / "pg.sh"), "ctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


def pg_start_trouble() -> str:
    """Why PostgreSQL may not have started again: the last lines of its log,
    and whoever holds its port (a socket of another program, or of a client
    that got the port as its own while the server was down)."""
    port = int(os.environ.get("PGPORT_THROWAWAY", "54329"))
    base = (
        Path(f"/tmp/procrastinate-prefork-pg-{port}")  # noqa: S108 (pg.sh as root)
        if os.geteuid() == 0
        else REPO / ".pgdata" / str(port)
    )
    try:
        log = (base / "postgres.log").read_text(errors="replace").splitlines()[-5:]
    except OSError as exc:
        log = [f"(no log: {exc})"]
    try:
        holders = [
            f"pid {c.pid} {c.status} {c.laddr} -> {c.raddr or '-'}"
            for c in psutil.net_connections(kind="tcp")
            if c.laddr and c.laddr.port == port
        ]
    except psutil.Error as exc:
        holders = [f"(cannot list sockets: {exc})"]
    return f"log: {' | '.join(log)}; port {port} held by: {holders or 'nobody'}"


#: the switchable attacks of ChaosConfig (CHAOS_OFF="name,name" turns some off)
ATTACKS = (
    "kill_supervisor",
    "stop_children",
    "restart_db",
    "queueing_locks",
    "mixed_timeouts",
    "db_outage",
    "sighup_burst",
    "time_limits",
    "stock_worker",
    "fleet_lock",
    "log_pipe",
    "black_hole",
)


@dataclasses.dataclass(frozen=True)
class HostPlan:
    """How one supervisor of the run is started (see ChaosConfig.host)."""

    stalled_timeout: float
    heartbeat_interval: float
    child_concurrency: int
    queues: tuple[str, ...] = ()  # () = all queues
    task_timeouts: tuple[tuple[str, float], ...] = ()
    roles: tuple[str, ...] = ()
    #: () = one pool of the fields above (tests/chaos_pools.py)
    pools: tuple[PoolPlan, ...] = ()


@dataclasses.dataclass
class ChaosConfig:
    supervisors: int = 3
    children: int = 4
    child_concurrency: int = 1
    jobs: int = 1000
    #: seconds of chaos; the jobs are deferred over its first 80 %
    seconds: float = 60.0
    kill_interval: float = 0.5  # a random child SIGKILLed about this often
    kill_supervisor: bool = True
    stop_children: bool = True
    restart_db: bool = True
    #: jobs deferred with ``queueing_lock`` = ``lock`` (QUEUEING_LOCKS values)
    queueing_locks: bool = True
    #: host 0 runs with a short stalled timeout (``short_stalled_timeout``,
    #: heartbeat every second), the others heartbeat every half
    #: ``stalled_timeout``
    mixed_timeouts: bool = True
    short_stalled_timeout: float = 2.0
    #: PostgreSQL stopped for ``outage_seconds``; a supervisor SIGKILLed when
    #: it stops and started again in a loop until one comes up
    db_outage: bool = True
    outage_seconds: float = 8.0
    #: SIGHUPs sent 0.1 s apart to one supervisor (0: none); its children
    #: must come back to ``children`` within ``converge_timeout``
    sighup_burst: int = 10
    converge_timeout: float = 60.0
    #: one host runs ``--child-concurrency 2 --task-timeout
    #: chaos_overrun=<time_limit>`` and serves the ``timed`` queue, which
    #: gets ``overrun_jobs`` jobs, half of them sleeping 3 x the limit
    time_limits: bool = True
    time_limit: float = 2.0
    overrun_jobs: int = 16
    #: a stock ``procrastinate worker`` beside the fleet; SIGTERMed while it
    #: runs a ``stock_job_seconds`` job (a new one is started at once)
    stock_worker: bool = True
    stock_job_seconds: float = 12.0
    #: ACCESS EXCLUSIVE lock on the fleet table held for twice the longest
    #: stalled timeout (plus a second)
    fleet_lock: bool = True
    #: the SIGHUP host's stdout is a pipe (tests/chaos_log_pipe.py) whose
    #: reader is killed while children retire (SIGTTOU, SIGHUP), then replaced
    log_pipe: bool = True
    #: one host (the ``timed`` one) reaches PostgreSQL through a relay
    #: (tests/blackhole.py) that black-holes its connections, old and new,
    #: for ``hole_seconds``: its supervisor's /live must answer every poll
    #: within a second meanwhile. It declares ``hole_stalled_timeout``, so
    #: that no host judges it dead during the hole (a longer partition is
    #: node loss, where a job may run twice by design)
    black_hole: bool = True
    hole_seconds: float = 10.0
    hole_stalled_timeout: float = 20.0
    #: the hosts of the SIGHUP/log-pipe and timed/black-hole roles run two
    #: pools each (tests/chaos_pools.py); CHAOS_POOLS=0 leaves them one
    pools: bool = True
    stalled_timeout: float = 6.0
    heartbeat_interval: float = 1.0
    child_timeout: float = 3.0
    polling_interval: float = 2.0
    drain_timeout: float = 180.0  # after the chaos, for the last jobs
    #: give up draining when the pending jobs did not change for this long
    stuck_timeout: float = 60.0
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
        mix and the victims repeat with it, the timings do not).
        CHAOS_OFF: comma-separated attacks (ATTACKS) to leave out."""
        env: dict[str, Any] = {
            "jobs": int(os.environ.get("CHAOS_JOBS", cls.jobs)),
            "seconds": float(os.environ.get("CHAOS_SECONDS", cls.seconds)),
            "seed": int(os.environ.get("CHAOS_SEED") or random.randrange(10**6)),
            "pools": os.environ.get("CHAOS_POOLS", "1") not in ("0", ""),
        }
        for name in filter(None, os.environ.get("CHAOS_OFF", "").split(",")):
            if name.strip() not in ATTACKS:
                raise ValueError(f"CHAOS_OFF: unknown attack {name!r}: {ATTACKS}")
            env[name.strip()] = 0 if name.strip() == "sighup_burst" else False
        return cls(**{**env, **overrides})

    def roles(self) -> dict[str, int]:
        """role -> index of the host that plays it."""
        n = self.supervisors
        roles = {}
        if self.mixed_timeouts:
            roles["short-timeout"] = 0
        if self.sighup_burst:
            roles["sighup"] = 1 % n
        if self.time_limits:
            roles["timed"] = 2 % n
        if self.log_pipe:  # spared by the supervisor kills, as the SIGHUP host
            roles["log-pipe"] = 1 % n
        if self.black_hole:
            roles["black-hole"] = 2 % n
        return roles

    def host(self, index: int) -> HostPlan:
        roles = tuple(r for r, i in self.roles().items() if i == index)
        stalled, heartbeat = self.stalled_timeout, self.heartbeat_interval
        if "short-timeout" in roles:
            stalled, heartbeat = self.short_stalled_timeout, 1.0
        elif "black-hole" in roles:
            stalled, heartbeat = self.hole_stalled_timeout, 1.0
        elif self.mixed_timeouts:
            heartbeat = stalled / 2  # the longest interval allowed
        concurrency, task_timeouts = self.child_concurrency, ()
        queues: tuple[str, ...] = ()
        if self.time_limits or self.stock_worker:
            # the timed queue only where its limit is enforced; the stock
            # worker's own queue not at all
            queues = ("default",)
        if "timed" in roles:
            concurrency = max(2, concurrency)
            task_timeouts = (("chaos_overrun", self.time_limit),)
            queues = ("default", "timed")
        pools: tuple[PoolPlan, ...] = ()
        if self.pools and POOL_ROLES.intersection(roles):
            pools = host_pools(self.children, queues, concurrency, task_timeouts)
        if self.pools and queues:  # the async jobs' queue
            queues = (*queues, ASYNC_QUEUE)
        return HostPlan(
            stalled, heartbeat, concurrency, queues, task_timeouts, roles, pools
        )

    def longest_stalled_timeout(self) -> float:
        """Of the hosts the fleet-table lock is meant to outlast (the
        black-holed host's long timeout would make it last the whole run)."""
        plans = [self.host(i) for i in range(self.supervisors)]
        timeouts = [p.stalled_timeout for p in plans if "black-hole" not in p.roles]
        return max(timeouts, default=self.stalled_timeout)

    def pools_setting(self, index: int) -> dict[str, dict[str, Any]]:
        """The pools of a host, as ``$PREFORK_TEST_POOLS`` gives them ({}: one
        pool, from the command line)."""
        return {
            pool.name: pool.setting(self.child_timeout, self.polling_interval)
            for pool in self.host(index).pools
        }

    def fleet_args(self, hostname: str, index: int = 0) -> list[str]:
        """The command line of a host; a pools host's per-pool options are
        in its pools (``pools_setting``): the two do not mix."""
        plan = self.host(index)
        args = [
            "--hostname",
            hostname,
            "--stalled-timeout",
            str(plan.stalled_timeout),
            "--heartbeat-interval",
            str(plan.heartbeat_interval),
            # the final state of every job must not depend on how often a
            # random kill hits it
            "--max-crash-retries",
            "1000",
            "--shutdown-graceful-timeout",
            "20",
        ]
        if plan.pools:
            return args
        args += ["--concurrency", str(self.children)]
        args += ["--child-concurrency", str(plan.child_concurrency)]
        args += ["--child-timeout", str(self.child_timeout)]
        args += ["--fetch-job-polling-interval", str(self.polling_interval)]
        if plan.queues:
            args += ["--queues", ",".join(plan.queues)]
        for task, seconds in plan.task_timeouts:
            args += ["--task-timeout", f"{task}={seconds:g}"]
        return args

    def pool_sizes(self, index: int) -> list[int]:
        """The children of each pool of a host."""
        return [p.children for p in self.host(index).pools] or [self.children]


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
                    self.runs[key] = Run(
                        *key, start=float(at), lock=None if lock == "-" else lock
                    )
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

    def observe(
        self,
        supervisors: list[int],
        others: Sequence[int] = (),
    ) -> dict[int, list[int]]:
        """Supervisors and their children; ``others`` (stock workers) are only
        watched for being alive."""
        now = time.time()
        seen: dict[int, list[int]] = {}
        alive: set[int] = {pid for pid in others if pid_alive(pid)}
        for sup in supervisors:
            try:
                process = psutil.Process(sup)
                children = [
                    c.pid
                    for c in process.children()
                    if c.status() != psutil.STATUS_ZOMBIE and not is_probe_process(c)
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
    # the attacks of the guarantees issues (see ChaosConfig)
    queueing_lock_jobs: int = 0
    queueing_lock_refused: int = 0  # defer refused: one was already todo
    queueing_lock_failed: int = 0
    #: of them, failed by a recovery (its queueing lock taken) before any run
    queueing_lock_failed_unrun: int = 0
    host_timeouts: dict[str, str] = dataclasses.field(default_factory=dict)
    db_outages: int = 0
    outage_start_attempts: int = 0  # supervisor starts during/after the outage
    sighups: int = 0
    sighup_converged: int = 0
    overrun_jobs: int = 0
    overrun_long: int = 0
    time_limit_kills: int = 0
    stock_workers: int = 0
    stock_worker_runs: int = 0
    stock_worker_terms: int = 0
    stock_worker_exits: dict[str, int] = dataclasses.field(default_factory=dict)
    #: jobs a stock worker left doing (its outcome write lost in a database
    #: restart: procrastinate's own behaviour), and jobs of their locks that
    #: could not run for it
    stock_left_doing: int = 0
    stock_blocked: int = 0
    fleet_locks: int = 0
    fleet_lock_seconds: float = 0.0
    log_pipe_breaks: int = 0
    log_pipe_gone: int = 0  # children gone while it had no reader
    log_pipe_retired: int = 0  # of them, exited (no signal)
    log_pipe_killed: int = 0  # of them, killed by their supervisor
    black_holes: int = 0
    hole_live_polls: int = 0
    hole_live_failed: int = 0  # answered, but not 200
    hole_loop_turns: int = 0  # the hole host's loop answered /status
    #: host (h1...) -> pool -> queues:children x jobs per child
    pool_hosts: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    #: host -> pool -> runs made by its children (pools hosts only)
    pool_runs: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    throughput: float = 0.0
    problems: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"jobs: {self.jobs} {dict(sorted(self.by_task.items()))}",
            f"final statuses: {dict(sorted(self.statuses.items()))}",
            f"runs: {self.runs} in {self.seconds:.1f} s ({self.throughput:.1f} jobs/s)",
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
            f"queueing-lock jobs: {self.queueing_lock_jobs} "
            f"({self.queueing_lock_refused} defers refused by the lock, "
            f"{self.queueing_lock_failed} ended failed, "
            f"{self.queueing_lock_failed_unrun} of them before any run)",
            f"hosts (stalled timeout/heartbeat): {self.host_timeouts}",
            f"database outages: {self.db_outages} ({self.outage_start_attempts} "
            f"supervisor starts across it)",
            f"SIGHUPs: {self.sighups} (bursts converged: {self.sighup_converged})",
            f"time-limited jobs: {self.overrun_jobs} ({self.overrun_long} past the "
            f"limit); time-limit kills logged: {self.time_limit_kills}",
            f"stock workers: {self.stock_workers} ({self.stock_worker_runs} runs, "
            f"{self.stock_worker_terms} SIGTERMed mid-job, exits "
            f"{self.stock_worker_exits}; {self.stock_left_doing} job(s) left doing "
            f"by them, {self.stock_blocked} blocked by their locks)",
            f"fleet-table locks: {self.fleet_locks} ({self.fleet_lock_seconds:.1f} s)",
            f"log pipe broken: {self.log_pipe_breaks} time(s), "
            f"{self.log_pipe_gone} children gone while it had no reader "
            f"({self.log_pipe_retired} exited, {self.log_pipe_killed} killed by "
            "their supervisor)",
            f"black holes: {self.black_holes} (/live polls {self.hole_live_polls}, "
            f"{self.hole_live_failed} answered not 200; /status answered by the "
            f"loop {self.hole_loop_turns} times)",
            f"pools hosts: {self.pool_hosts or 'none'}; runs by pool: {self.pool_runs}",
        ]
        if self.problems:
            lines.append(f"PROBLEMS ({len(self.problems)}):")
            lines.extend(f"  {p}" for p in self.problems[:40])
        return "\n".join(lines)


# ------------------------------------------------------------------- driver


class ChaosRun:
    def __init__(
        self,
        db_url: str,
        workdir: Path,
        config: ChaosConfig,
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
        self.host_of: dict[int, str] = {}  # supervisor pid -> its host
        self.current: dict[str, Fleet] = {}  # hostname -> its live supervisor
        self.markers = MarkerReader(self.results)
        self.watch = ProcessWatch()
        self.report = ChaosReport()
        self.deferred = 0
        self.deferred_mix = 0  # of them, jobs of MIX (``config.jobs`` in all)
        self.job_ids: list[int] = []
        self._stopped: dict[int, float] = {}  # SIGSTOPped pid -> SIGCONT time
        self._pg: subprocess.Popen[str] | None = None
        self._final_live: frozenset[int] = frozenset()  # see snapshot_live
        self.started = 0.0
        #: job id -> the final statuses its books accept (default: its task's)
        self.expected: dict[int, frozenset[str]] = {}
        self.queueing_jobs: set[int] = set()
        self._stock_held: set[int] = set()  # see stock_held
        self.overrun_long: set[int] = set()
        self.overrun_short: set[int] = set()
        self.stock: list[Fleet] = []  # every stock worker started
        self._stock_exits_seen: set[int] = set()
        self._stock_next_start = 0.0
        self._tasks: list[Iterator[None]] = []  # attacks that span ticks
        self._db_down = False  # stopped by the outage attack
        self._db_calm_at = 0.0  # monotonic time the database was last back + 10 s
        self._outage_hosts: set[str] = set()  # in a start loop right now
        #: hosts whose children the random SIGKILLs spare for now (an attack
        #: that judges how they exit)
        self._kill_spared: set[str] = set()
        #: the black-holed host's relay and probe port (black_hole)
        self._hole: BlackHole | None = None
        self._hole_port = 0
        self._stopping = False
        self.log_pipe = LogPipe(workdir) if config.log_pipe else None

    # --- fleet

    def hostnames(self) -> list[str]:
        return [f"{self.tag}-h{i}" for i in range(self.config.supervisors)]

    def host_with(self, role: str) -> str | None:
        index = self.config.roles().get(role)
        return None if index is None else self.hostnames()[index]

    def start_supervisor(self, hostname: str, wait_ready: bool = False) -> Fleet:
        index = self.hostnames().index(hostname)
        fleet = Fleet(self.db_url, self.workdir, f"{hostname}-{len(self.fleets)}")
        env = {"PREFORK_TEST_RESULTS": str(self.results), **self._hole_env(hostname)}
        args = [*self.config.fleet_args(hostname, index), *self._hole_args(hostname)]
        command = None
        if pools := self.config.pools_setting(index):
            # as the Django setting gives them (tests/pools_main.py)
            env["PREFORK_TEST_POOLS"] = json.dumps(pools)
            command = [sys.executable, "-m", "tests.pools_main", "--app", CHAOS_APP]
            command += ["worker", *args]
        stdout = None
        if self.log_pipe is not None and hostname == self.host_with("log-pipe"):
            env.update(PIPE_ENV)
            stdout = self.log_pipe.writer()
        try:
            fleet.start(
                *args,
                app=CHAOS_APP,
                wait_ready=wait_ready,
                env=env,
                stdout=stdout,
                command=command,
            )
        finally:
            if stdout is not None:
                os.close(stdout)
        self.fleets.append(fleet)
        self.host_of[fleet.pid] = hostname
        self.current[hostname] = fleet
        return fleet

    def start_stock_worker(self) -> Fleet:
        """procrastinate's own worker, serving the default queue beside the
        fleet and the ``stock`` queue alone."""
        fleet = Fleet(self.db_url, self.workdir, f"{self.tag}-stock-{len(self.stock)}")
        fleet.start(
            app=CHAOS_APP,
            wait_ready=False,
            env={"PREFORK_TEST_RESULTS": str(self.results)},
            command=[
                sys.executable,
                "-m",
                "procrastinate",
                "--app",
                CHAOS_APP,
                "worker",
                "--name",
                fleet.name,
                "--queues",
                "default,stock",
                "--concurrency",
                "2",
            ],
        )
        self.stock.append(fleet)
        self.report.stock_workers += 1
        return fleet

    def start(self) -> None:
        for index, hostname in enumerate(self.hostnames()):
            self.start_supervisor(hostname)
            plan = self.config.host(index)
            self.report.host_timeouts[hostname.rsplit("-", 1)[1]] = (
                f"{plan.stalled_timeout:g}/{plan.heartbeat_interval:g}"
            )
        if self.config.stock_worker:
            self.start_stock_worker()
        for fleet in self.current.values():
            fleet.wait_ready(timeout=60)
        self.observe()

    def supervisor_pids(self) -> list[int]:
        return [f.pid for f in self.current.values() if not f.exited()]

    def observe(self) -> dict[int, list[int]]:
        stock = [f.pid for f in self.stock if not f.exited()]
        return self.watch.observe(self.supervisor_pids(), stock)

    def live_children(self, spared: Sequence[str] = ()) -> list[int]:
        """Children alive and not SIGSTOPped, but those of the ``spared`` hosts."""
        spared_pids = {self.current[h].pid for h in spared if h in self.current}
        return [
            pid
            for sup, pids in self.observe().items()
            if sup not in spared_pids
            for pid in pids
            if pid not in self._stopped
        ]

    # --- jobs

    def _insert(self, rows: list[JobRow]) -> list[int]:
        """(queue, task, lock, queueing_lock, json args) rows inserted in one
        statement, the way procrastinate's defer does; returns their ids."""
        columns = [list(col) for col in zip(*rows, strict=True)]
        with psycopg.connect(self.db_url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT procrastinate_defer_jobs_v1(array_agg(ROW("
                "  t.queue, t.task, 0, t.lock, t.qlock, t.args::jsonb, NULL"
                ")::procrastinate_job_to_defer_v1 ORDER BY t.n)) "
                "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], "
                "  %s::text[]) WITH ORDINALITY AS t(queue, task, lock, qlock, args, n)",
                columns,
            ).fetchone()
        assert row is not None
        ids = list(row[0])
        self.job_ids.extend(ids)
        self.deferred += len(ids)
        return ids

    def defer(self, count: int) -> list[int]:
        """``count`` jobs of the mix; returns their ids."""
        rows = []
        tasks = list(MIX)
        weights = [MIX[t] for t in tasks]
        for _ in range(count):
            task = self.rng.choices(tasks, weights)[0]
            lock = None
            if task == "chaos_cpu":
                params: dict[str, Any] = {"ms": self.rng.randint(5, 60)}
            elif task == "chaos_sleep":
                # a few long ones: a sweep judging by the wrong timeout, or
                # too early after an outage, finds them running
                long = self.config.mixed_timeouts and self.rng.random() < 0.1
                low, high = (2.0, 5.0) if long else (0.2, 1.5)
                params = {"seconds": round(self.rng.uniform(low, high), 3)}
            elif task == "chaos_async":
                params = {"seconds": round(self.rng.uniform(0.1, 1.0), 3)}
            elif task == "chaos_locked":
                params = {"seconds": round(self.rng.uniform(0.05, 0.4), 3)}
                lock = f"{self.tag}-lock-{self.rng.randrange(LOCKS)}"
            else:
                params = {"ms": self.rng.randint(1, 10)}
            queue = "default"
            if task == "chaos_async" and self.config.pools:
                queue = ASYNC_QUEUE  # the pools' io pools run it
            rows.append((queue, task, lock, None, json.dumps(params)))
        return self._insert(rows)

    def defer_queueing_locked(self) -> None:
        """One ``chaos_queued`` job per queueing-lock value, unless one of that
        value is already ``todo`` (then PostgreSQL refuses it: counted)."""
        for n in range(QUEUEING_LOCKS):
            value = f"{self.tag}-qlock-{n}"
            params = {"seconds": round(self.rng.uniform(0.3, 1.5), 3)}
            try:
                [job_id] = self._insert(
                    [("default", "chaos_queued", value, value, json.dumps(params))]
                )
            except psycopg.errors.UniqueViolation:
                self.report.queueing_lock_refused += 1
                continue
            self.queueing_jobs.add(job_id)
            self.expected[job_id] = QUEUEING_LOCK_STATUSES

    def defer_overrun(self) -> None:
        """One ``chaos_overrun`` job on the ``timed`` queue, long and short in
        turn."""
        long = len(self.overrun_long) <= len(self.overrun_short)
        seconds = overrun_seconds(long, self.config.time_limit, self.rng)
        [job_id] = self._insert(
            [("timed", "chaos_overrun", None, None, json.dumps({"seconds": seconds}))]
        )
        (self.overrun_long if long else self.overrun_short).add(job_id)
        self.expected[job_id] = frozenset({"failed" if long else "succeeded"})

    def counts(self) -> dict[str, int]:
        with psycopg.connect(self.db_url, autocommit=True, connect_timeout=5) as conn:
            return dict(
                conn.execute(
                    "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1"
                ).fetchall()
            )

    # --- chaos actions

    def kill_random_child(self) -> int | None:
        children = self.live_children(sorted(self._kill_spared))
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

    def _sigkill_supervisor(self, hostname: str) -> None:
        fleet = self.current[hostname]
        children = self.observe().get(fleet.pid, [])
        os.kill(fleet.pid, signal.SIGKILL)
        fleet.wait(timeout=10)
        self.watch.killed[fleet.pid] = "supervisor SIGKILL"
        for pid in children:
            self.watch.killed.setdefault(pid, "its supervisor was SIGKILLed")
        self.report.supervisor_kills += 1
        self.report.children_lost_with_supervisor += len(children)
        self.say(
            f"SIGKILLed supervisor {fleet.pid} of {hostname} ({len(children)} children)"
        )

    def killable_hosts(self) -> list[str]:
        """Hosts the supervisor kills may hit: not the one whose children the
        SIGHUP check counts, nor one in an outage's start loop."""
        spared = {
            self.host_with("sighup"),
            self.host_with("log-pipe"),
            *self._outage_hosts,
        }
        return [h for h in self.hostnames() if h not in spared] or self.hostnames()

    def kill_supervisor(self, hostname: str) -> None:
        """SIGKILL the supervisor of ``hostname`` (its children die with it)
        and start a new one under the same host name."""
        self._sigkill_supervisor(hostname)
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
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.report.db_restarts += 1
        self._db_calm_at = float("inf")

    def _db_restart_done(self) -> bool:
        if self._pg is None:
            return True
        if self._pg.poll() is None:
            return False
        output = self._pg.stdout.read() if self._pg.stdout else ""
        if self._pg.returncode != 0:
            raise RuntimeError(f"pg.sh ctl restart failed: {output}")
        self._pg = None
        self._db_calm_at = time.monotonic() + 10
        return True

    # --- attacks that span ticks (generators stepped by the run loop)

    def _pg_ctl_async(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(REPO / "scripts" / "pg.sh"), "ctl", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def db_outage(self, hostname: str) -> Iterator[None]:
        """Stop PostgreSQL for ``outage_seconds``; SIGKILL the supervisor of
        ``hostname`` as it stops and start it again in a loop (the way a
        service manager restarts a unit that exits 1) until one comes up:
        attempts while the database is down, one right when it is back."""
        config = self.config
        self._outage_hosts.add(hostname)
        self._db_down = True
        self._db_calm_at = float("inf")
        self.say(f"stopping PostgreSQL for {config.outage_seconds:g} s")
        stopper = self._pg_ctl_async("stop", "-m", "fast", "-w")
        while stopper.poll() is None:
            yield
        if stopper.returncode != 0:
            raise RuntimeError(f"pg.sh ctl stop failed: {stopper.communicate()[0]}")
        self.report.db_outages += 1
        back_at = time.monotonic() + config.outage_seconds
        self._sigkill_supervisor(hostname)
        fleet = self.start_supervisor(hostname)
        self.report.outage_start_attempts += 1
        starter: subprocess.Popen[str] | None = None
        retry_at: float | None = None
        give_up = back_at + 90
        while True:
            now = time.monotonic()
            if starter is None and now >= back_at:
                starter = self._pg_ctl_async("start", "-w")
            if self._db_down and starter is not None and starter.poll() is not None:
                if starter.returncode != 0:
                    # the port may be taken for a moment as another program's
                    # ephemeral client port: try again
                    if now > give_up - 30:
                        raise RuntimeError(
                            f"pg.sh ctl start failed: {starter.communicate()[0]} "
                            f"({pg_start_trouble()})"
                        )
                    starter = None
                    back_at = now + 1
                    yield
                    continue
                self._db_down = False
                self._db_calm_at = now + 10
                self.say("PostgreSQL is back")
            if fleet.exited():
                if retry_at is None:
                    retry_at = now + 0.5
                elif now >= retry_at:
                    fleet = self.start_supervisor(hostname)
                    self.report.outage_start_attempts += 1
                    retry_at = None
            elif not self._db_down and any(
                e["process"] == fleet.pid
                for e in self.events()
                if e["action"] == "fleet_ready"
            ):
                break
            if now > give_up:
                self.report.problems.append(
                    f"outage: no supervisor of {hostname} came up 90 s after "
                    "PostgreSQL was back"
                )
                break
            yield
        self._outage_hosts.discard(hostname)
        self.say(
            f"supervisor of {hostname} up after the outage "
            f"({self.report.outage_start_attempts} starts)"
        )

    def sighup_burst(self, hostname: str) -> Iterator[None]:
        """``sighup_burst`` SIGHUPs 0.1 s apart; then the supervisor's live
        children must come back to the target within ``converge_timeout``."""
        fleet = self.current[hostname]
        for _ in range(self.config.sighup_burst):
            fleet.signal(signal.SIGHUP)
            self.report.sighups += 1
            until = time.monotonic() + 0.1
            while time.monotonic() < until:
                yield
        self.say(f"{self.config.sighup_burst} SIGHUPs sent to supervisor {fleet.pid}")
        deadline = time.monotonic() + self.config.converge_timeout
        target = self.config.children
        steady = Steady(target, SETTLE_SECONDS)
        while True:
            count = len(self.observe().get(fleet.pid, []))
            if fleet is not self.current.get(hostname) or fleet.exited():
                self.report.problems.append(
                    f"SIGHUP burst: supervisor {fleet.pid} gone before converging"
                )
                return
            if steady.update(count, time.monotonic()):
                self.report.sighup_converged += 1
                self.say(f"supervisor {fleet.pid} back to {target} children")
                return
            if time.monotonic() > deadline:
                self.report.problems.append(
                    f"SIGHUP burst: supervisor {fleet.pid} has {count} live children "
                    f"{self.config.converge_timeout:g} s after the burst, "
                    f"target {target}"
                )
                return
            yield

    def stock_term(self) -> Iterator[None]:
        """A long job on the stock worker's own queue; once it runs, SIGTERM
        the worker (it drains: no heartbeat any more) and start a new stock
        worker at once, as a rolling deploy does. The job must not run again
        while the first worker lives (the rerun check)."""
        params = json.dumps({"seconds": self.config.stock_job_seconds})
        while True:
            try:
                [job_id] = self._insert([("stock", "chaos_sleep", None, None, params)])
                break
            except psycopg.OperationalError:
                yield
        # only stock workers serve its queue; one may die (procrastinate's
        # own crashes are reported elsewhere): the job runs on the next one
        deadline = time.monotonic() + 60
        while True:
            stock = {f.pid: f for f in self.stock if not f.exited()}
            running = [
                r.pid
                for r in self.markers.runs.values()
                if r.job_id == job_id and r.outcome is None and r.pid in stock
            ]
            if running:
                worker = stock[running[-1]]
                break
            if time.monotonic() > deadline:
                self.report.problems.append(
                    f"stock worker: job {job_id} not started on a live stock worker "
                    "within 60 s"
                )
                return
            yield
        worker.signal(signal.SIGTERM)
        self.watch.killed[worker.pid] = "SIGTERM (stock worker, draining)"
        self.report.stock_worker_terms += 1
        self.say(f"SIGTERMed stock worker {worker.pid} running job {job_id}")
        self.start_stock_worker()

    def _stock_current(self) -> Fleet | None:
        live = [
            f for f in self.stock if not f.exited() and f.pid not in self.watch.killed
        ]
        return live[-1] if live else None

    def keep_stock_worker(self) -> None:
        """Record stock workers' exits; start a new one when none serves (a
        stock worker may die of a database restart: procrastinate's own
        behaviour, reported, not judged, unless the database was calm)."""
        now = time.monotonic()
        for fleet in self.stock:
            if fleet.pid in self._stock_exits_seen or not fleet.exited():
                continue
            self._stock_exits_seen.add(fleet.pid)
            code = fleet.proc.returncode if fleet.proc else None
            exits = self.report.stock_worker_exits
            exits[str(code)] = exits.get(str(code), 0) + 1
            why = self.watch.killed.setdefault(fleet.pid, f"stock worker exited {code}")
            if code != 0 and not why.startswith("SIGTERM") and now >= self._db_calm_at:
                self.report.problems.append(
                    f"stock worker {fleet.pid} died (exit {code}) with the database "
                    f"up: {last_error_line(fleet.log())}"
                )
        if (
            self.config.stock_worker
            and self._stock_current() is None
            and now >= self._stock_next_start
            and not self._stopping
        ):
            self.start_stock_worker()
            self._stock_next_start = now + 3

    def fleet_lock(self) -> Iterator[None]:
        """``LOCK TABLE procrastinate_prefork_processes IN ACCESS EXCLUSIVE
        MODE`` held for twice the longest stalled timeout of the fleet: every
        heartbeat written behind it is older than any host's timeout."""
        hold = 2 * self.config.longest_stalled_timeout() + 1
        try:
            conn = psycopg.connect(self.db_url, connect_timeout=5)
            conn.execute("SET lock_timeout = '20s'")
            conn.execute(
                "LOCK TABLE procrastinate_prefork_processes IN ACCESS EXCLUSIVE MODE"
            )
        except psycopg.Error as exc:
            self.report.problems.append(f"fleet lock: could not take it: {exc}")
            return
        start = time.monotonic()
        self.report.fleet_locks += 1
        self.say(f"fleet table locked for {hold:g} s")
        try:
            while time.monotonic() < start + hold:
                yield
            conn.commit()
        finally:
            conn.close()
        self.report.fleet_lock_seconds += time.monotonic() - start
        self.say("fleet table unlocked")

    def _children_of(self, fleet: Fleet) -> set[int]:
        return set(self.observe().get(fleet.pid, []))

    def _settle(self, fleet: Fleet, target: int, why: str) -> Iterator[None]:
        steady = Steady(target, 1.0)
        deadline = time.monotonic() + self.config.converge_timeout
        while not steady.update(len(self._children_of(fleet)), time.monotonic()):
            if time.monotonic() > deadline:
                self.report.problems.append(
                    f"log pipe: supervisor {fleet.pid} not at {target} children "
                    f"{self.config.converge_timeout:g} s after {why}"
                )
                return
            yield

    def broken_log_pipe(self, hostname: str) -> Iterator[None]:
        """Once no SIGHUP burst runs: kill the reader of ``hostname``'s stdout,
        retire a child (SIGTTOU) and roll every other one over (SIGHUP) while
        nobody reads, then start a new reader and SIGTTIN back. The children
        that exit meanwhile fail to flush their stdout; none may run the
        supervisor's code (``stray_supervisor_records``) nor its jobs twice.
        The random SIGKILLs spare that host's children meanwhile: each child
        gone is one that exited through the broken pipe, unless its
        supervisor killed it (counted apart)."""
        pipe = self.log_pipe
        assert pipe is not None
        while any(t.__name__ == "sighup_burst" for t in self._tasks):
            yield
        fleet = self.current[hostname]
        self._kill_spared.add(hostname)
        try:
            # its children replaced after the last kills: all of them retire
            yield from self._settle(fleet, self.config.children, "the last kills")
            pipe.kill_reader()
            self.report.log_pipe_breaks += 1
            self.say(f"log pipe of supervisor {fleet.pid}: reader killed")
            before = self._children_of(fleet)
            fleet.signal(signal.SIGTTOU)
            # one child fewer in every pool of more than one
            index = self.hostnames().index(hostname)
            fewer = size_after_ttou(self.config.pool_sizes(index))
            yield from self._settle(fleet, fewer, "SIGTTOU")
            old = self._children_of(fleet)
            fleet.signal(signal.SIGHUP)
            deadline = time.monotonic() + self.config.converge_timeout
            while old & self._children_of(fleet) and time.monotonic() < deadline:
                yield
            gone = (before | old) - self._children_of(fleet)
            pipe.start_reader()
            self.say(f"log pipe: new reader; {len(gone)} children gone meanwhile")
            fleet.signal(signal.SIGTTIN)
            yield from self._settle(fleet, self.config.children, "SIGTTIN")
        finally:
            self._kill_spared.discard(hostname)
        # counted once the supervisor has reaped them all (a child is gone
        # for psutil as a zombie, before its supervisor logs its exit)
        self._count_log_pipe_exits(fleet.pid, gone)

    def _count_log_pipe_exits(self, supervisor: int, gone: set[int]) -> None:
        exits = {
            e["pid"]: e
            for e in self.events()
            if e["action"] == "child_exited"
            and e["process"] == supervisor
            and e["pid"] in gone
        }
        report = self.report
        report.log_pipe_gone += len(gone)
        for pid in sorted(gone):
            if pid not in exits:
                report.problems.append(
                    f"log pipe: child {pid} of supervisor {supervisor} gone, its "
                    "exit never logged"
                )
            elif exits[pid]["signal"] is None:
                report.log_pipe_retired += 1
            elif pid in self.watch.killed:
                report.problems.append(
                    f"log pipe: child {pid} was SIGKILLed by the driver, which "
                    "spares that host meanwhile"
                )
            else:  # by its supervisor (a retirement past its deadline)
                report.log_pipe_killed += 1

    def _hole_args(self, hostname: str) -> list[str]:
        if hostname != self.host_with("black-hole"):
            return []
        if not self._hole_port:
            self._hole_port = free_port()
        return ["--health-port", str(self._hole_port)]

    def _hole_env(self, hostname: str) -> dict[str, str]:
        if hostname != self.host_with("black-hole"):
            return {}
        if self._hole is None:
            self._hole = BlackHole.to(self.db_url)
        return {"DATABASE_URL": self._hole.url(self.db_url)}

    def black_hole(self, hostname: str) -> Iterator[None]:
        """Black-hole every connection of ``hostname`` (supervisor and
        children, old connections and new) for ``hole_seconds``; meanwhile
        its /live, polled with a 1 s timeout, must answer every time, and
        its loop keeps answering /status. Its supervisor is spared the kills
        (a new one could not start through the hole)."""
        assert self._hole is not None
        self._outage_hosts.add(hostname)
        self._hole.swallowing.set()
        self.report.black_holes += 1
        self.say(f"black hole on {hostname} for {self.config.hole_seconds:g} s")
        end = time.monotonic() + self.config.hole_seconds
        try:
            while time.monotonic() < end:
                live = http_status(self._hole_port, "/live", timeout=1.0)
                self.report.hole_live_polls += 1
                if not isinstance(live, int):
                    self.report.problems.append(
                        f"black hole: /live of {hostname} unanswered within 1 s "
                        f"({live})"
                    )
                elif live != 200:
                    self.report.hole_live_failed += 1
                if http_status(self._hole_port, "/status", timeout=1.0) == 200:
                    self.report.hole_loop_turns += 1
                yield
        finally:
            self._hole.swallowing.clear()
            self._outage_hosts.discard(hostname)
        self.say(f"{hostname}'s database path is back")

    def step_attacks(self) -> None:
        for task in list(self._tasks):
            try:
                next(task)
            except StopIteration:
                self._tasks.remove(task)
        if self.config.stock_worker:
            self.keep_stock_worker()

    def finish_attacks(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while self._tasks:
            self.markers.read()
            self.step_attacks()
            if time.monotonic() > deadline:
                self.report.problems.append(f"attacks unfinished after {timeout:g} s")
                for task in self._tasks:
                    task.close()
                self._tasks.clear()
            time.sleep(0.05)

    # --- the run

    def schedule(self) -> list[tuple[float, str]]:
        """(seconds into the chaos, action), in order: once in the chaos
        window, or once per ``repeat_every`` seconds. The attacks on the
        database and the fleet table do not overlap, so that each problem
        found can be told apart."""
        config = self.config
        cycle = []
        if config.sighup_burst:
            cycle.append((0.05, "sighup_burst"))
        if config.stock_worker:
            cycle.append((0.08, "stock_term"))
        if config.black_hole:
            cycle.append((0.10, "black_hole"))  # over before the fleet lock
        if config.kill_supervisor:
            cycle.append((0.20, "kill_supervisor"))
        if config.stop_children:
            cycle.append((0.27, "stop_long"))  # past --child-timeout: killed as wedged
        if config.fleet_lock:
            cycle.append((0.38, "fleet_lock"))  # after stop_long
        if config.log_pipe:
            cycle.append((0.45, "log_pipe"))  # after the SIGHUP burst's
        if config.stop_children:
            cycle.append((0.62, "stop_short"))  # resumed before --child-timeout
        if config.restart_db:
            cycle.append((0.66, "restart_db"))
        if config.db_outage:
            cycle.append((0.75, "db_outage"))
        period = config.repeat_every or config.seconds
        plan = []
        cycle_start = 0.0
        while cycle_start + period <= config.seconds + 1e-9:
            plan.extend((cycle_start + at * period, action) for at, action in cycle)
            cycle_start += period
        return plan

    def _act(self, action: str) -> None:
        config = self.config
        if action == "kill_supervisor":
            self.kill_supervisor(self.rng.choice(self.killable_hosts()))
        elif action == "stop_long":
            self.stop_child(config.child_timeout + 2)
        elif action == "stop_short":
            self.stop_child(config.child_timeout / 3)
        elif action == "restart_db":
            self.restart_db()
        elif action == "db_outage":
            # a host judging by the long stalled timeout: a double run it
            # causes is then the outage's, not the short timeout's
            short = self.host_with("short-timeout")
            killable = self.killable_hosts()
            hosts = [h for h in killable if h != short] or killable
            self._tasks.append(self.db_outage(self.rng.choice(hosts)))
        elif action == "sighup_burst":
            hostname = self.host_with("sighup")
            assert hostname is not None
            self._tasks.append(self.sighup_burst(hostname))
        elif action == "stock_term":
            self._tasks.append(self.stock_term())
        elif action == "fleet_lock":
            self._tasks.append(self.fleet_lock())
        elif action == "log_pipe":
            hostname = self.host_with("log-pipe")
            assert hostname is not None
            self._tasks.append(self.broken_log_pipe(hostname))
        elif action == "black_hole":
            hostname = self.host_with("black-hole")
            assert hostname is not None
            self._tasks.append(self.black_hole(hostname))

    def _db_busy(self) -> bool:
        return self._db_down or not self._db_restart_done()

    def _defer_tick(self, now: float, defer_until: float) -> None:
        config = self.config
        if config.rate:
            batch = max(1, round(config.rate * 0.5))
        else:
            batches_left = max(1, round((defer_until - now) / 0.5))
            batch = -(-(config.jobs - self.deferred_mix) // batches_left)
        try:
            if batch > 0:
                self.deferred_mix += len(self.defer(batch))
            if config.queueing_locks:
                self.defer_queueing_locked()
            if config.time_limits:
                # the overrun jobs spread over the window (or, in the soak,
                # overrun_jobs per repeat_every)
                span = config.repeat_every or (defer_until - self.started)
                due = config.overrun_jobs * (now - self.started) / span
                if not config.repeat_every:  # the window may end late: no more
                    due = min(due, config.overrun_jobs)
                if len(self.overrun_long) + len(self.overrun_short) < due:
                    self.defer_overrun()
        except psycopg.OperationalError:
            pass  # the database is restarting: next time

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
            if now >= next_defer and not self._db_busy():
                self._defer_tick(now, defer_until)
                next_defer = now + 0.5
            if plan and now >= start + plan[0][0]:
                _, action = plan.pop(0)
                self._act(action)
            self.step_attacks()
            if now >= next_kill:
                self.kill_random_child()
                next_kill = now + config.kill_interval * self.rng.uniform(0.6, 1.4)
            if on_tick is not None:
                on_tick(self)
            time.sleep(0.05)
        self._continue_stopped(force=True)
        while not self._db_restart_done():
            time.sleep(0.1)
        self.finish_attacks()

    def drain(self) -> None:
        """Wait until no job is left ``todo`` or ``doing``."""
        deadline = time.monotonic() + self.config.drain_timeout
        pending: tuple[int, int] | None = None
        changed = time.monotonic()
        stock_only_since: float | None = None
        while True:
            self.observe()
            self.markers.read()
            self.step_attacks()
            try:
                counts = self.counts()
            except psycopg.OperationalError:
                counts = {"todo": -1}
            if not counts.get("todo") and not counts.get("doing"):
                return
            now = time.monotonic()
            if counts.get("todo") != -1 and self._only_stock_held():
                if stock_only_since is None:
                    stock_only_since = now
                elif now - stock_only_since > 5:
                    return  # judged in the books (stock_held)
            else:
                stock_only_since = None
            now_pending = (counts.get("todo", 0), counts.get("doing", 0))
            if now_pending != pending:
                pending, changed = now_pending, now
            if now - changed > self.config.stuck_timeout:
                self.report.problems.append(
                    f"jobs stuck: no change for {self.config.stuck_timeout:g} s "
                    f"after the chaos: {counts}"
                )
                return
            if now > deadline:
                self.report.problems.append(
                    f"jobs still pending {self.config.drain_timeout:g} s after the "
                    f"chaos: {counts}"
                )
                return
            time.sleep(0.5)

    def _only_stock_held(self) -> bool:
        """Whether every job left ``todo`` or ``doing`` is one a stock worker
        left (see stock_held): no drain waits for those."""
        try:
            with (
                psycopg.connect(
                    self.db_url, autocommit=True, connect_timeout=5
                ) as conn,
                conn.cursor(row_factory=dict_row) as cur,
            ):
                rows = cur.execute(
                    "SELECT id, status::text AS status, worker_id, lock "
                    "FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
                ).fetchall()
        except psycopg.OperationalError:
            return False
        return {r["id"] for r in rows} <= self.stock_held(rows, self.markers.by_job())

    def check_fleet_table_live(self) -> None:
        """Every live supervisor's row is fresh and running."""
        with (
            psycopg.connect(self.db_url, autocommit=True) as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            rows = cur.execute(
                "SELECT pid, host, state, "
                "EXTRACT(EPOCH FROM now() - last_heartbeat)::float8 AS age "
                "FROM procrastinate_prefork_processes WHERE kind = 'supervisor'"
            ).fetchall()
        live = {f.pid: h for h, f in self.current.items() if not f.exited()}
        stalled = {
            h: self.config.host(i).stalled_timeout
            for i, h in enumerate(self.hostnames())
        }
        for pid, host in live.items():
            mine = [r for r in rows if r["pid"] == pid and r["host"] == host]
            if len(mine) != 1:
                self.report.problems.append(
                    f"supervisor {pid} on {host}: {len(mine)} rows"
                )
                continue
            row = mine[0]
            if row["state"] != "running" or row["age"] > stalled[host]:
                self.report.problems.append(
                    f"supervisor {pid} on {host}: state {row['state']}, "
                    f"heartbeat {row['age']:.1f} s old"
                )
        for row in rows:
            if row["pid"] not in live and row["state"] != "stopped":
                self.report.problems.append(
                    f"dead supervisor {row['pid']} on {row['host']} still "
                    f"'{row['state']}' in the fleet table"
                )

    def stop(self) -> None:
        """SIGTERM every live supervisor; each must drain and exit 0."""
        self._stopping = True
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
                    f"supervisor {fleet.pid} ({fleet.name}) exited with {code}"
                )
        # stock workers drain their jobs; their exit codes are procrastinate's
        for worker in self.stock:
            if not worker.exited():
                self.watch.killed.setdefault(worker.pid, "SIGTERM (final stop)")
                worker.signal(signal.SIGTERM)
        for worker in self.stock:
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill_all()
        self.keep_stock_worker()

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
        for task in self._tasks:
            task.close()  # a fleet lock's connection closes with it
        if self._hole is not None:
            self._hole.close()
        failed_start: BaseException | None = None
        if self._db_down:
            try:
                pg_ctl("start", "-w")
            except (subprocess.SubprocessError, OSError) as exc:
                # the fleets must still be stopped below; say why after
                failed_start = RuntimeError(
                    f"PostgreSQL did not start again: {exc} ({pg_start_trouble()})"
                )
        if self.log_pipe is not None:
            self.log_pipe.close()
        for fleet in [*self.fleets, *self.stock]:
            if fleet.proc is not None and fleet.proc.poll() is None:
                fleet.kill_all()
        for pid in self.watch.last_seen:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if failed_start is not None:
            # once no process of the run holds a socket, the port may be free:
            # the tests after this one need the server
            try:
                pg_ctl("start", "-w")
            except (subprocess.SubprocessError, OSError):
                raise failed_start from None

    # --- the books

    def events(self) -> list[dict[str, Any]]:
        """The structured log records of every fleet (tests/apps/events.py:
        they share one results directory, so one file)."""
        path = self.results / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def analyze(self) -> ChaosReport:
        report = self.report
        self.markers.read()
        report.problems.extend(self.markers.anomalies)
        with (
            psycopg.connect(self.db_url, autocommit=True) as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            rows = cur.execute(
                "SELECT id, task_name, queue_name, status::text AS status, attempts, "
                "worker_id, lock FROM procrastinate_jobs ORDER BY id"
            ).fetchall()
            fleet_rows = cur.execute(
                "SELECT kind, pid, host, state FROM procrastinate_prefork_processes "
                "WHERE state <> 'stopped'"
            ).fetchall()
        report.jobs = len(rows)
        report.by_task = dict(Counter(r["task_name"] for r in rows))
        report.statuses = dict(Counter(r["status"] for r in rows))
        if report.jobs != self.deferred:
            report.problems.append(
                f"{self.deferred} jobs deferred, {report.jobs} in the table"
            )
        for row in fleet_rows:
            report.problems.append(
                f"fleet table: {row['kind']} pid {row['pid']} on {row['host']} still "
                f"'{row['state']}' after the stop"
            )
        runs_by_job = self.markers.by_job()
        report.runs = len(self.markers.runs)
        self._stock_held = self.stock_held(rows, runs_by_job)
        for row in rows:
            self.check_job(row, runs_by_job.get(row["id"], []))
        self._check_locks(runs_by_job)
        report.problems.extend(
            stray_supervisor_records(self.events(), {f.pid for f in self.fleets})
        )
        self._count_processes()
        self._count_attacks(rows)
        self._count_pools(rows)
        report.seconds = max(
            (r.finish or r.start for r in self.markers.runs.values()), default=0
        ) - min((r.start for r in self.markers.runs.values()), default=0)
        done = sum(1 for r in rows if r["status"] in ("succeeded", "failed"))
        report.throughput = done / report.seconds if report.seconds else 0.0
        return report

    def check_job(self, row: dict[str, Any], runs: list[Run]) -> None:
        """One job's books: its final status, its runs, its reruns."""
        report = self.report
        expected = self.expected.get(row["id"]) or {EXPECTED_STATUS[row["task_name"]]}
        if row["id"] in self._stock_held:
            if row["status"] == "doing":
                report.stock_left_doing += 1
            else:
                report.stock_blocked += 1
            self._check_reruns(row["id"], runs)
            return
        if row["status"] in ("todo", "doing"):
            report.lost += 1
            report.problems.append(
                f"job {row['id']} ({row['task_name']}) left {row['status']}"
            )
        elif row["status"] not in expected:
            report.wrong_status += 1
            report.problems.append(
                f"job {row['id']} ({row['task_name']}) ended {row['status']}, "
                f"expected {' or '.join(sorted(expected))}"
            )
        if not runs and self._failed_by_conflict(row):
            report.queueing_lock_failed_unrun += 1
            return
        if not runs:
            report.lost += 1
            report.problems.append(f"job {row['id']} ({row['task_name']}) never ran")
            return
        last = runs[-1]
        if row["status"] == "succeeded" and last.outcome != "end":
            report.problems.append(
                f"job {row['id']} succeeded but its last run ended {last.outcome}"
            )
        if row["id"] in self.overrun_long and last.outcome is not None:
            report.problems.append(
                f"job {row['id']} (chaos_overrun, {3 * self.config.time_limit:g} s, "
                f"limit {self.config.time_limit:g} s): its last run was not stopped "
                f"by the time limit (it ended {last.outcome})"
            )
        self._check_reruns(row["id"], runs)

    def _fleet_worker_ids(self) -> set[int]:
        """The procrastinate worker ids of our fleet's children."""
        return {e["worker_id"] for e in self.events() if e["action"] == "child_ready"}

    def stock_held(
        self, rows: list[dict[str, Any]], runs_by_job: dict[int, list[Run]]
    ) -> set[int]:
        """Jobs a stock procrastinate worker left ``doing``, and the ``todo``
        jobs of their locks. A stock worker that fails to write a job's outcome
        (a database restart) logs it and leaves the job ``doing`` under its
        worker, live and heartbeating: procrastinate's behaviour, not our
        fleet's. Such a job's last run was on a stock worker's pid, and has
        ended (or that pid is gone), and no child of ours holds it: a job of
        our fleet is judged strictly."""
        stock = {f.pid for f in self.stock}
        ours = self._fleet_worker_ids()
        left: set[int] = set()
        for row in rows:
            runs = runs_by_job.get(row["id"], [])
            if row["status"] != "doing" or not runs or runs[-1].pid not in stock:
                continue
            last = runs[-1]
            if last.outcome is None and pid_alive(last.pid):
                continue  # still running there
            if row["worker_id"] not in ours:
                left.add(row["id"])
        locks = {r["lock"] for r in rows if r["id"] in left and r["lock"]}
        blocked = {
            r["id"] for r in rows if r["status"] == "todo" and r["lock"] in locks
        }
        return left | blocked

    def _failed_by_conflict(self, row: dict[str, Any]) -> bool:
        """A queueing-lock job that a recovery (or its child, after a fetch
        whose reply was lost) failed because a job of its queueing lock was
        waiting: it may never have run, the waiting job does its work."""
        if row["id"] not in self.queueing_jobs or row["status"] != "failed":
            return False
        return any(
            e["action"] in ("job_recovery_conflict", "lost_fetch_conflict")
            and e.get("job_id") == row["id"]
            for e in self.events()
        )

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
                    "was still alive at the end, was run again (attempt "
                    f"{later.attempt})"
                )
            elif seen is not None and later.start < seen - 0.05:
                report.problems.append(
                    f"job {job_id}: run again at {later.start:.3f} while pid {pid} of "
                    f"its earlier run ({kind}) was still alive at {seen:.3f}"
                )

    def _check_locks(self, runs_by_job: dict[int, list[Run]]) -> None:
        by_lock: dict[str, list[Run]] = defaultdict(list)
        for runs in runs_by_job.values():
            for run in runs:
                if run.lock:
                    by_lock[run.lock].append(run)
        for lock, runs in by_lock.items():
            runs.sort(key=lambda r: r.start)
            for earlier, later in itertools.pairwise(runs):
                if earlier.job_id == later.job_id:
                    continue  # a rerun of one job: the rerun check judges it
                if earlier.finish is not None:
                    busy_until = earlier.finish
                else:  # interrupted: its process was alive at least until then
                    busy_until = self.watch.last_seen.get(earlier.pid, earlier.start)
                if later.start < busy_until - 0.05:
                    self.report.problems.append(
                        f"lock {lock}: job {later.job_id} started at {later.start:.3f} "
                        f"while job {earlier.job_id} held it until {busy_until:.3f}"
                    )

    def _count_processes(self) -> None:
        report = self.report
        actions = Counter(e.get("action") for e in self.events())
        report.recoveries = actions["job_recovered"]
        report.wedged_kills = actions["child_wedged"]
        report.children_forked = actions["child_started"]
        supervisors = {f.pid for f in self.fleets}
        report.other_child_deaths = sum(
            1
            for pid in self.watch.gone_at
            if pid not in supervisors
            and pid not in self.watch.killed
            and pid not in self._final_live
        )

    def _count_attacks(self, rows: list[dict[str, Any]]) -> None:
        report = self.report
        status = {r["id"]: r["status"] for r in rows}
        report.queueing_lock_jobs = len(self.queueing_jobs)
        report.queueing_lock_failed = sum(
            1 for j in self.queueing_jobs if status.get(j) == "failed"
        )
        report.overrun_jobs = len(self.overrun_long) + len(self.overrun_short)
        report.overrun_long = len(self.overrun_long)
        blamed = time_limit_blames(self.events())
        report.time_limit_kills = len(blamed)
        for job_id in wrongly_blamed(blamed, self.overrun_long):
            report.problems.append(
                f"job {job_id} ({status.get(job_id, '?')} in the end) was blamed for "
                f"exceeding a time limit it was not deferred to exceed"
            )
        stock_pids = {f.pid for f in self.stock}
        report.stock_worker_runs = sum(
            1 for r in self.markers.runs.values() if r.pid in stock_pids
        )

    def _count_pools(self, rows: list[dict[str, Any]]) -> None:
        """The runs of each pool of the pools hosts; a job run by a pool
        that does not serve its queue is a problem."""
        plans = {
            host.rsplit("-", 1)[1]: self.config.host(index).pools
            for index, host in enumerate(self.hostnames())
            if self.config.host(index).pools
        }
        self.report.pool_hosts = {
            host: {p.name: p.label() for p in pools} for host, pools in plans.items()
        }
        short = {pid: host.rsplit("-", 1)[1] for pid, host in self.host_of.items()}
        runs = list(self.markers.runs.values())
        events = self.events()
        self.report.pool_runs = {
            host: ran
            for host, ran in runs_by_pool(events, [r.pid for r in runs], short).items()
            if host in plans
        }
        queue = {r["id"]: r["queue_name"] for r in rows}
        self.report.problems.extend(
            misrouted(
                [(r.job_id, r.pid, queue.get(r.job_id, "?")) for r in runs],
                child_pools(events, short),
                plans,
            )
        )

    def check_children_counts(self) -> None:
        """Once the attacks are over, every supervisor comes back to its
        number of children and stays there (a SIGHUP burst, crash loops and
        kills must not leave a fleet over- or undersized)."""
        target = self.config.children
        deadline = time.monotonic() + self.config.converge_timeout
        steady = {h: Steady(target, SETTLE_SECONDS) for h in self.current}
        pending = set(steady)
        counts: dict[str, int] = {}
        while pending and time.monotonic() < deadline:
            seen = self.observe()
            for hostname in list(pending):
                fleet = self.current[hostname]
                counts[hostname] = len(seen.get(fleet.pid, []))
                if fleet.exited() or steady[hostname].update(
                    counts[hostname], time.monotonic()
                ):
                    pending.discard(hostname)
            time.sleep(0.2)
        for hostname in sorted(pending):
            self.report.problems.append(
                f"supervisor {self.current[hostname].pid} of {hostname}: "
                f"{counts[hostname]} live children, target {target}, "
                f"{self.config.converge_timeout:g} s after the chaos"
            )

    def snapshot_live(self) -> None:
        """The fleet's processes alive just before the final stop: a job run
        by one of them must never have run again."""
        seen = self.observe()
        self._final_live = frozenset(
            [
                *seen,
                *(pid for pids in seen.values() for pid in pids),
                *(f.pid for f in self.stock if not f.exited()),
            ]
        )

    def execute(self, on_tick: Callable[[ChaosRun], None] | None = None) -> ChaosReport:
        """The whole run: start, chaos, drain, checks, stop, books."""
        try:
            self.start()
            self.run_chaos(on_tick)
            if not self.config.rate:  # every job deferred
                missing = self.config.jobs - self.deferred_mix
                if missing > 0:
                    self.deferred_mix += len(self.defer(missing))
                if self.config.time_limits:
                    while (
                        len(self.overrun_long) + len(self.overrun_short)
                        < self.config.overrun_jobs
                    ):
                        self.defer_overrun()
            self.say("chaos over; waiting for the last jobs")
            self.drain()
            time.sleep(2 * self.config.heartbeat_interval)
            self.check_children_counts()
            self.snapshot_live()
            self.check_fleet_table_live()
            self.stop()
            left = self.leftovers()
            self.report.problems.extend(f"left behind: {p}" for p in left)
            return self.analyze()
        finally:
            self.cleanup()
