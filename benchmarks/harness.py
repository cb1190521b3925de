"""The moving parts of the benchmarks: databases, worker processes, CPU
accounting, Redis. No scenario logic here (that is ``scenarios.py``).

Rules that keep a 2-core machine's numbers honest:

* jobs are inserted in one statement, only once every worker is registered,
  idle and has settled;
* while a drain runs, the harness sleeps and asks the database one cheap
  question per ``poll`` seconds; it never starts a process;
* start and end times come from the database (``procrastinate_events``) or,
  for Celery, from timestamps the pool processes record themselves.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg

REPO = Path(__file__).resolve().parent.parent
APP = "benchmarks.app.app"
CELERY_APP = "benchmarks.celery_app"
HARNESS_APPNAME = "bench-harness"
STOCK_APPNAME = "bench-stock"
T = TypeVar("T")


class BenchError(RuntimeError):
    pass


def wait_for(
    condition: Callable[[], T | None], timeout: float, interval: float, what: str
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------- database


def with_dbname(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + dbname))


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, application_name=HARNESS_APPNAME)


class Databases:
    """One template holding procrastinate's schema and ours; a fresh database
    cloned from it for every measured run, so that every run starts from empty
    tables and indexes."""

    def __init__(self, admin_url: str):
        self.admin_url = admin_url
        self.prefix = f"bench_{os.getpid()}"
        self.template = f"{self.prefix}_template"

    def create_template(self) -> None:
        from procrastinate import schema as procrastinate_schema

        from procrastinate_prefork.fleet import schema as prefork_schema

        with connect(self.admin_url) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.template} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {self.template}")
        with connect(with_dbname(self.admin_url, self.template)) as conn:
            conn.execute(procrastinate_schema.SchemaManager.get_schema())  # type: ignore[arg-type]
            prefork_schema.apply(conn)

    def drop_template(self) -> None:
        with connect(self.admin_url) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.template} WITH (FORCE)")

    @contextlib.contextmanager
    def fresh(self) -> Iterator[str]:
        name = f"{self.prefix}_{uuid.uuid4().hex[:8]}"
        with connect(self.admin_url) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {self.template}")
        try:
            yield with_dbname(self.admin_url, name)
        finally:
            with connect(self.admin_url) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def server_version(self) -> str:
        with connect(self.admin_url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


def dbname_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def defer(
    conn: psycopg.Connection, task: str, count: int, args: dict[str, Any]
) -> None:
    """Insert ``count`` jobs in one statement, through procrastinate's own
    defer function (same rows, triggers and NOTIFYs as ``defer``)."""
    conn.execute(
        "SELECT procrastinate_defer_jobs_v1(array_agg(ROW("
        "  'default', %s, 0, NULL, NULL, %s::jsonb, NULL"
        ")::procrastinate_job_to_defer_v1)) FROM generate_series(1, %s)",
        [task, json.dumps(args), count],
    )


def unfinished(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
    ).fetchone()
    return int(row[0]) if row else 0


def drain_window(conn: psycopg.Connection) -> tuple[int, int, float]:
    """(succeeded, failed, seconds from the first start to the last end)."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE type = 'succeeded'),"
        "       count(*) FILTER (WHERE type = 'failed'),"
        "       extract(epoch FROM max(at) FILTER (WHERE type IN ('succeeded',"
        " 'failed'))"
        "                        - min(at) FILTER (WHERE type = 'started'))"
        " FROM procrastinate_events"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), float(row[2] or 0.0)


def registered_workers(conn: psycopg.Connection) -> tuple[int, float | None]:
    """(rows in procrastinate_workers, epoch of the latest registration)."""
    row = conn.execute(
        "SELECT count(*), extract(epoch FROM max(last_heartbeat)) FROM "
        "procrastinate_workers"
    ).fetchone()
    assert row is not None
    return int(row[0]), (float(row[1]) if row[1] is not None else None)


def sessions(conn: psycopg.Connection) -> dict[str, int]:
    """Sessions on this connection's database, by who holds them (the
    harness's own excluded): ``prefork`` (application_name prefork:...),
    ``stock`` (PGAPPNAME set by the harness for stock workers, or empty),
    ``other``."""
    rows = conn.execute(
        "SELECT application_name FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        "   AND backend_type = 'client backend'"
    ).fetchall()
    counts = {"prefork": 0, "stock": 0, "other": 0}
    for (name,) in rows:
        if name.startswith("prefork:"):
            counts["prefork"] += 1
        elif name == "" or name.startswith(STOCK_APPNAME):
            counts["stock"] += 1
        elif name != HARNESS_APPNAME:
            counts["other"] += 1
    return counts


# ------------------------------------------------------------------ CPU counting


def system_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy / hz, (busy + idle + iowait) / hz


def cpu_by_pid(pids: Sequence[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        found[pid] = times.user + times.system
    return found


_CLIENT_TITLE = re.compile(r"^postgres: (\S+) (\S+) (\S+\(\d+\)|\[local\]) ")


def postmaster_pid(url: str) -> int | None:
    """The PostgreSQL server process listening on the URL's port on this
    machine, or None (a remote server, or not allowed to see it)."""
    port = urlsplit(url).port or 5432
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] not in ("postgres", "postmaster") or not cmdline:
            continue
        if cmdline[0].startswith("postgres:"):
            continue  # a child: backends and background processes
        try:
            listening = [
                c
                for c in proc.net_connections("inet")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port
            ]
        except psutil.Error:
            continue
        if listening:
            return proc.pid
    return None


def server_pids(
    postmaster: int | None, dbname: str, exclude: Sequence[int] = ()
) -> list[int]:
    """The PostgreSQL processes working for one database: its client backends
    (by process title, ``postgres: user dbname host(port) state``) and, when
    the server runs on this machine, its background processes too (WAL writer,
    checkpointer, autovacuum...), which the drains keep busy as well."""
    if postmaster is not None:
        try:
            candidates = psutil.Process(postmaster).children()
        except psutil.Error:
            candidates = []
    else:
        candidates = list(psutil.process_iter())
    found = []
    for proc in candidates:
        try:
            title = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if not title.startswith("postgres:") or proc.pid in exclude:
            continue
        client = _CLIENT_TITLE.match(title)
        if client:
            if client.group(2) == dbname:
                found.append(proc.pid)
        elif postmaster is not None:
            found.append(proc.pid)
    return found


def background_busy(seconds: float) -> float:
    """Fraction of the machine's CPU busy while the harness sleeps: the load
    other people put on it."""
    busy0, total0 = system_busy()
    time.sleep(seconds)
    busy1, total1 = system_busy()
    return (busy1 - busy0) / max(1e-9, total1 - total0)


class CpuMeter:
    """CPU seconds used between ``start`` and ``stop`` by the workers, by the
    database backends (or Redis) serving them, by the harness, and by anything
    else on the machine (``foreign``: the noise)."""

    def __init__(
        self,
        worker_pids: Callable[[], list[int]],
        server_pids: Callable[[], list[int]],
        harness_backend: int | None = None,
    ):
        self.worker_pids = worker_pids
        self.server_pids = server_pids
        # The harness's own database session (inserts, polls) counts as harness.
        self.harness_backend = [harness_backend] if harness_backend else []

    def _sample(self) -> dict[str, Any]:
        busy, total = system_busy()
        me = os.times()
        return {
            "workers": cpu_by_pid(self.worker_pids()),
            "server": cpu_by_pid(self.server_pids()),
            "harness": me.user
            + me.system
            + sum(cpu_by_pid(self.harness_backend).values()),
            "busy": busy,
            "total": total,
            "wall": time.monotonic(),
        }

    def start(self) -> None:
        self._before = self._sample()

    @staticmethod
    def _used(before: dict[int, float], after: dict[int, float]) -> float:
        # A process that appeared meanwhile counts in full; one that is gone
        # is lost (none should come or go during a drain).
        return sum(t - before.get(pid, 0.0) for pid, t in after.items())

    def stop(self) -> dict[str, float]:
        after = self._sample()
        before = self._before
        workers = self._used(before["workers"], after["workers"])
        server = self._used(before["server"], after["server"])
        d = {k: after[k] - before[k] for k in ("harness", "busy", "total", "wall")}
        ours = workers + server + d["harness"]
        return {
            "workers_cpu_s": round(workers, 3),
            "server_cpu_s": round(server, 3),
            "harness_cpu_s": round(d["harness"], 3),
            "wall_s": round(d["wall"], 3),
            "machine_busy_frac": round(d["busy"] / max(1e-9, d["total"]), 3),
            "foreign_cpu_frac": round(
                max(0.0, d["busy"] - ours) / max(1e-9, d["total"]), 3
            ),
        }


# --------------------------------------------------------------------- workers


def _parse_log_time(text: str) -> float:
    """Epoch of a ``2024-05-01 12:00:00,123`` log timestamp (local time)."""
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


#: Where the workers import procrastinate_prefork and benchmarks from: a copy
#: taken when the run starts (``snapshot_code``), so that edits made to the
#: working tree during a long run do not change the code under measurement.
CODE_PATH: list[Path] = [REPO]


def snapshot_code(dest: Path) -> dict[str, Any]:
    """Copy the package and the benchmarks into ``dest``; make the workers
    import them from there. Returns what was measured: the commit, whether
    the package differed from it, and a digest of the copied sources."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("procrastinate_prefork", "benchmarks"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    digest = hashlib.sha256()
    for path in sorted(dest.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(dest)).encode())
            digest.update(path.read_bytes())
    CODE_PATH[:] = [dest]

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
        )
        return out.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD") or "?",
        "package_uncommitted_changes": bool(
            git("status", "--porcelain", "--", "procrastinate_prefork")
        ),
        "sources_sha256": digest.hexdigest()[:16],
    }


class Workers:
    """One benchmarked setup: ``stock`` (one ``procrastinate worker
    --concurrency n``), ``stock_procs`` (n of them with concurrency 1),
    ``prefork`` (``procrastinate-prefork worker --concurrency n``) or
    ``celery`` (``celery worker -P prefork -c n``)."""

    KINDS = ("stock", "stock_procs", "prefork", "celery")

    def __init__(
        self,
        kind: str,
        n: int,
        db_url: str,
        workdir: Path,
        extra_args: Sequence[str] = (),
        broker: str | None = None,
    ):
        assert kind in self.KINDS, kind
        self.kind = kind
        self.n = n
        self.db_url = db_url
        self.workdir = workdir
        self.extra_args = list(extra_args)
        self.broker = broker
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.spawned_at = 0.0
        self.celery_stats = workdir / f"celery-stats-{uuid.uuid4().hex[:6]}"
        self.task_stats = workdir / f"task-stats-{uuid.uuid4().hex[:6]}"
        self.celery_node = f"bench-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"

    # ---- lifecycle

    def commands(self) -> list[tuple[list[str], dict[str, str]]]:
        py = sys.executable
        if self.kind == "stock":
            return [
                (
                    [
                        py,
                        "-m",
                        "procrastinate",
                        "--app",
                        APP,
                        "worker",
                        "--concurrency",
                        str(self.n),
                        *self.extra_args,
                    ],
                    {"PGAPPNAME": f"{STOCK_APPNAME}:0"},
                )
            ]
        if self.kind == "stock_procs":
            return [
                (
                    [
                        py,
                        "-m",
                        "procrastinate",
                        "--app",
                        APP,
                        "worker",
                        "--concurrency",
                        "1",
                        *self.extra_args,
                    ],
                    {"PGAPPNAME": f"{STOCK_APPNAME}:{i}"},
                )
                for i in range(self.n)
            ]
        if self.kind == "prefork":
            return [
                (
                    [
                        py,
                        "-m",
                        "procrastinate_prefork.cli",
                        "--app",
                        APP,
                        "worker",
                        "--concurrency",
                        str(self.n),
                        *self.extra_args,
                    ],
                    {},
                )
            ]
        self.celery_stats.mkdir(exist_ok=True)
        return [
            (
                [
                    py,
                    "-m",
                    "celery",
                    "-A",
                    CELERY_APP,
                    "worker",
                    "-P",
                    "prefork",
                    "-c",
                    str(self.n),
                    "--prefetch-multiplier",
                    "1",
                    "-l",
                    "info",
                    "-n",
                    self.celery_node,
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-Q",
                    "celery",
                    *self.extra_args,
                ],
                {
                    "BENCH_CELERY_STATS": str(self.celery_stats),
                    "BENCH_CELERY_BROKER": self.broker or "",
                },
            )
        ]

    def start(self) -> Workers:
        base_env = {
            **os.environ,
            "DATABASE_URL": self.db_url,
            "PYTHONPATH": os.pathsep.join(str(p) for p in CODE_PATH),
            "PYTHONUNBUFFERED": "1",
        }
        base_env.pop("PGAPPNAME", None)
        self.task_stats.mkdir(exist_ok=True)
        base_env["BENCH_TASK_STATS"] = str(self.task_stats)
        self.spawned_at = time.time()
        for i, (cmd, env) in enumerate(self.commands()):
            log_path = (
                self.workdir / f"{self.kind}-{self.n}-{uuid.uuid4().hex[:6]}-{i}.log"
            )
            self.logs.append(log_path)
            with open(log_path, "wb") as log:
                self.procs.append(
                    subprocess.Popen(
                        cmd,
                        cwd=CODE_PATH[0],
                        env={**base_env, **env},
                        stdout=log,
                        # No new session: every setup's processes share the
                        # harness's session, hence one scheduler autogroup, as
                        # processes started from one shell would. (N stock
                        # processes in N sessions would get N shares of the CPU
                        # against PostgreSQL's one, a fleet only one.)
                        stderr=subprocess.STDOUT,
                        start_new_session=False,
                    )
                )
        return self

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise BenchError(
                    f"{self.kind} worker exited early with code {proc.returncode}:\n"
                    + self.log_text()[-3000:]
                )

    def wait_ready(self, conn: psycopg.Connection | None, timeout: float = 60) -> float:
        """Wait until every worker is registered and idle; returns the epoch
        at which the last one became ready (from the logs or the database)."""
        if self.kind == "prefork":
            pattern = re.compile(
                rf"^(\S+ \S+) \S+ +\[\d+\] \S+: All {self.n} children ready",
                re.MULTILINE,
            )

            def ready() -> float | None:
                self.check_alive()
                m = pattern.search(self.logs[0].read_text(errors="replace"))
                return _parse_log_time(m.group(1)) if m else None
        elif self.kind == "celery":
            pattern = re.compile(
                r"^\[(\S+ \S+): \w+/MainProcess\] \S+ ready\.", re.MULTILINE
            )

            def ready() -> float | None:
                self.check_alive()
                m = pattern.search(self.logs[0].read_text(errors="replace"))
                if not m or len(self.child_pids()) < self.n:
                    return None
                return _parse_log_time(m.group(1))
        else:
            expected = 1 if self.kind == "stock" else self.n
            assert conn is not None

            def ready() -> float | None:
                self.check_alive()
                count, latest = registered_workers(conn)
                return latest if count >= expected else None

        return wait_for(ready, timeout, 0.05, f"{self.kind} x{self.n} to be ready")

    def stop(self, timeout: float = 60) -> float:
        """SIGTERM, then wait for every process; returns the seconds it took."""
        start = time.monotonic()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        try:
            for proc in self.procs:
                proc.wait(timeout=max(0.1, timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(
                f"{self.kind} x{self.n} did not stop within {timeout:g} s"
            ) from None
        return time.monotonic() - start

    def kill(self) -> None:
        for pid in self.all_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        shutil.rmtree(self.celery_stats, ignore_errors=True)
        shutil.rmtree(self.task_stats, ignore_errors=True)

    # ---- processes

    def main_pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def child_pids(self) -> list[int]:
        """Forked pool processes (prefork children, Celery pool processes)."""
        pids: list[int] = []
        for pid in self.main_pids():
            with contextlib.suppress(psutil.Error):
                pids.extend(c.pid for c in psutil.Process(pid).children())
        return sorted(pids)

    def all_pids(self) -> list[int]:
        pids = []
        for pid in self.main_pids():
            pids.append(pid)
            with contextlib.suppress(psutil.Error):
                pids.extend(c.pid for c in psutil.Process(pid).children(recursive=True))
        return pids

    def job_processes(self) -> list[int]:
        """The processes that run jobs: the children of a prefork fleet or a
        Celery pool, or the stock processes themselves."""
        return (
            self.child_pids()
            if self.kind in ("prefork", "celery")
            else self.main_pids()
        )

    def child_titles(self) -> dict[int, str]:
        titles = {}
        for pid in self.child_pids():
            with contextlib.suppress(psutil.Error):
                titles[pid] = " ".join(psutil.Process(pid).cmdline())
        return titles

    # ---- Celery's side of a drain

    def celery_progress(self) -> tuple[int, float, float]:
        """(tasks done, first start, last end) over every pool process."""
        count, first, last = 0, float("inf"), 0.0
        for path in self.celery_stats.iterdir():
            try:
                parts = path.read_text().split()
            except OSError:
                continue
            if len(parts) >= 3:
                count += int(parts[0])
                first = min(first, float(parts[1]))
                last = max(last, float(parts[2]))
        return count, first, last


# ------------------------------------------------------------------------ redis


class Redis:
    """A private redis-server on loopback for the Celery comparison."""

    def __init__(self, port: int, workdir: Path):
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> str | None:
        """None if Celery can be benchmarked, else why not."""
        if not shutil.which("redis-server"):
            return "redis-server is not installed (apt-get install redis-server)"
        try:
            import celery  # noqa: F401
            import redis  # noqa: F401
        except ImportError as exc:
            return f"celery[redis] is not installed ({exc}; pip install -e '.[bench]')"
        return None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        with open(self.workdir / "redis.log", "wb") as log:
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                    "--protected-mode",
                    "yes",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise BenchError(
                    f"redis-server exited: {(self.workdir / 'redis.log').read_text()}"
                )
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(up, 10, 0.05, "redis-server")
        return self

    def flush(self) -> None:
        import redis

        redis.Redis(host="127.0.0.1", port=self.port).flushall()

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    models = re.findall(r"^model name\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
    mhz = re.findall(r"^cpu MHz\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
    cache = re.findall(r"^cache size\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
    flags = re.findall(r"^flags\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
    free = subprocess.run(
        ["free", "-m"], capture_output=True, text=True, check=False
    ).stdout
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu_model": models[0] if models else "?",
        "logical_cpus": len(models) or os.cpu_count(),
        "usable_cpus": usable,
        "cpu_mhz": mhz[0] if mhz else None,
        "cache": cache[0] if cache else None,
        "virtual_machine": bool(flags) and "hypervisor" in flags[0].split(),
        "sched_autogroup": _autogroup_enabled(),
        "free_m": free.strip(),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "loadavg_at_start": os.getloadavg(),
    }


def _autogroup_enabled() -> bool | None:
    try:
        return (
            Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
        )
    except OSError:
        return None


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for dist in (
        "procrastinate",
        "procrastinate-prefork",
        "psycopg",
        "psycopg-pool",
        "celery",
        "kombu",
        "redis",
    ):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    if shutil.which("redis-server"):
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout
        m = re.search(r"v=(\S+)", out)
        found["redis-server"] = m.group(1) if m else out.strip()
    return found


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="prefork-bench-"))
