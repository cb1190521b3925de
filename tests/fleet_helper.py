"""Drive a real fleet from the tests: start the CLI as a subprocess, defer
jobs, read the database and the processes, wait for conditions."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psutil
import psycopg
from psycopg.rows import dict_row

REPO = Path(__file__).resolve().parent.parent
APP = "tests.apps.plain_app.app"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(port: int, path: str, timeout: float) -> int | str:
    """The status of GET ``path`` on the probe port, or why no complete
    answer came within ``timeout`` (the exception's name)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError as exc:
        return type(exc).__name__
    finally:
        conn.close()


def is_probe_process(process: psutil.Process) -> bool:
    """The helper that serves /live (``liveprobe``): not a worker child."""
    try:
        return " ".join(process.cmdline()).startswith("procrastinate-prefork probe")
    except psutil.Error:
        return False


def wait_for(
    condition: Callable[[], T],
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def defer(
    db_url: str, task: str, count: int = 1, *, queue: str = "default", **kwargs: Any
) -> list[int]:
    """Insert jobs the way procrastinate's defer does (the same SQL function)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT procrastinate_defer_jobs_v1(array_agg(ROW("
            "  %s, %s, 0, NULL, NULL, %s::jsonb, NULL"
            ")::procrastinate_job_to_defer_v1)) FROM generate_series(1, %s)",
            [queue, task, json.dumps(kwargs), count],
        ).fetchone()
    assert rows is not None
    return list(rows[0])


def jobs(db_url: str, ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
    with (
        psycopg.connect(db_url, autocommit=True) as conn,
        conn.cursor(row_factory=dict_row) as cur,
    ):
        if ids is None:
            return cur.execute(
                "SELECT * FROM procrastinate_jobs ORDER BY id"
            ).fetchall()
        return cur.execute(
            "SELECT * FROM procrastinate_jobs WHERE id = ANY(%s) ORDER BY id",
            [list(ids)],
        ).fetchall()


def status_counts(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return dict(
            conn.execute(
                "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1"
            ).fetchall()
        )


class Fleet:
    """One supervisor process started from the command line."""

    def __init__(self, db_url: str, workdir: Path, name: str):
        self.db_url = db_url
        self.workdir = workdir
        self.results = workdir / f"results-{name}"
        self.results.mkdir(exist_ok=True)
        self.log_path = workdir / f"fleet-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.name = name
        # where its processes write events.jsonl: ``results`` unless the
        # test gives several fleets one directory (PREFORK_TEST_RESULTS)
        self.events_dir = self.results

    # --- lifecycle

    def start(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        app: str = APP,
        wait_ready: bool = True,
        command: Sequence[str] | None = None,
        stdout: Any = None,
    ) -> Fleet:
        """``stdout``: where the fleet's stdout goes (a pipe, a file) if not
        with its stderr into the log."""
        full_env = {
            **os.environ,
            "DATABASE_URL": self.db_url,
            "PREFORK_TEST_RESULTS": str(self.results),
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.events_dir = Path(full_env["PREFORK_TEST_RESULTS"])
        cmd = (
            list(command)
            if command
            else [
                sys.executable,
                "-m",
                "procrastinate_prefork.cli",
                "--app",
                app,
                "worker",
                "--fetch-job-polling-interval",
                "30",
                *args,
            ]
        )
        # The child writes to its own copy of the descriptor: ours is closed
        # at once, so that no test leaves the file open.
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=full_env,
                stdout=log if stdout is None else stdout,
                stderr=log if stdout is not None else subprocess.STDOUT,
            )
        if wait_ready:
            self.wait_ready()
        return self

    def run_to_exit(self, *args: str, timeout: float = 60, **kwargs: Any) -> int:
        self.start(*args, wait_ready=False, **kwargs)
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            shared = self.events_dir != self.results
            return any(
                not shared or e.get("process") == self.pid
                for e in self.events("fleet_ready")
            )

        wait_for(
            lambda: ready() or self.exited(),
            timeout,
            message="the fleet to be ready (its fleet_ready event)",
        )
        assert not self.exited(), f"fleet exited early:\n{self.log()}"

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            return None

    def kill_all(self) -> None:
        for pid in [*self.child_pids(), self.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait(timeout=10)

    # --- processes

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The whole fleet SIGSTOPped (a host frozen: a VM paused, swapping,
        a GC pause), the supervisor first so that it sees no child stop; all
        resumed at the end, children first."""
        os.kill(self.pid, signal.SIGSTOP)
        children = self.child_pids()
        for pid in children:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in [*children, self.pid]:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass

    def child_pids(self) -> list[int]:
        """The supervisor's worker children (not its probe process)."""
        try:
            return sorted(
                p.pid
                for p in psutil.Process(self.pid).children()
                if not is_probe_process(p)
            )
        except psutil.NoSuchProcess:
            return []

    def probe_pid(self) -> int | None:
        """The supervisor's probe process (``--health-port``), if any."""
        try:
            found = [
                p.pid
                for p in psutil.Process(self.pid).children()
                if is_probe_process(p)
            ]
        except psutil.NoSuchProcess:
            return None
        return found[0] if found else None

    def wait_children(
        self, count: int, timeout: float = 20, exclude: Sequence[int] = ()
    ) -> list[int]:
        def ready() -> list[int] | None:
            pids = [p for p in self.child_pids() if p not in exclude]
            return pids if len(pids) == count else None

        return wait_for(ready, timeout, message=f"{count} children")

    def child_states(self) -> dict[int, str]:
        """pid -> state, from the process titles."""
        states = {}
        for pid in self.child_pids():
            try:
                title = " ".join(psutil.Process(pid).cmdline())
            except psutil.Error:
                continue
            if "[" in title:
                states[pid] = title.split("[", 1)[1].split("]", 1)[0]
        return states

    def busy_child(self, timeout: float = 20) -> int:
        def find() -> int | None:
            for pid, state in self.child_states().items():
                if state.startswith("busy"):
                    return pid
            return None

        return wait_for(find, timeout, message="a busy child")

    def running_child(self, job_id: int, attempt: int = 0, timeout: float = 20) -> int:
        """The pid of the child once it has started ``job_id`` (its start mark
        is written: killing it now cannot race with the task's first line)."""

        def find() -> int | None:
            for j, a, pid in self.marks("start"):
                if (j, a) == (job_id, attempt):
                    return pid
            return None

        return wait_for(find, timeout, message=f"job {job_id} to start")

    # --- results written by the test tasks

    def marks(self, phase: str = "end") -> list[tuple[int, int, int]]:
        """(job id, attempt, pid) of each task run that reached ``phase``."""
        found = []
        for path in self.results.glob(f"*.{phase}"):
            job_id, attempt, _ = path.name.split(".")
            words = path.read_text().split()
            if not words:  # created, not written yet
                continue
            found.append((int(job_id), int(attempt), int(words[0])))
        return sorted(found)

    def events(self, action: str | None = None) -> list[dict[str, Any]]:
        """Structured log records (``extra`` fields) of the fleet's processes,
        written by tests/apps/events.py; those of ``action`` only if given."""
        path = self.events_dir / "events.jsonl"
        if not path.exists():
            return []
        found = [json.loads(line) for line in path.read_text().splitlines() if line]
        return [e for e in found if action is None or e.get("action") == action]

    def mark_times(self, phase: str = "start") -> dict[tuple[int, int], float]:
        times = {}
        for path in self.results.glob(f"*.{phase}"):
            job_id, attempt, _ = path.name.split(".")
            times[(int(job_id), int(attempt))] = float(path.read_text().split()[1])
        return times


class FleetFactory:
    def __init__(self, db_url: str, workdir: Path):
        self.db_url = db_url
        self.workdir = workdir
        self.fleets: list[Fleet] = []

    def new(self, name: str | None = None) -> Fleet:
        fleet = Fleet(self.db_url, self.workdir, name or str(len(self.fleets)))
        self.fleets.append(fleet)
        return fleet

    def cleanup(self) -> None:
        for fleet in self.fleets:
            if fleet.proc is None:  # never started (e.g. the test was skipped)
                continue
            if fleet.proc.poll() is None:
                fleet.kill_all()
            for pid in fleet.child_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def log_events(fleet: Fleet, action: str | None = None) -> list[dict[str, Any]]:
    """The JSON log records of a fleet started with ``tests.apps.json_log_app``
    (all of them, or those with ``action``)."""
    events = []
    for line in fleet.log().splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if action is None or event.get("action") == action:
            events.append(event)
    return events


def error_line(fleet: Fleet) -> str:
    """The one line a fleet wrote before exiting on bad input: tests check
    that it names the option or value at fault, not its wording."""
    lines = [line for line in fleet.log().splitlines() if line.strip()]
    assert len(lines) == 1, fleet.log()
    return lines[0]
