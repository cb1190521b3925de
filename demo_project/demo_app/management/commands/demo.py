"""``manage.py demo``: defer a demo workload, drain it with a prefork fleet.

What ``scripts/demo.sh`` runs after ``migrate``:

1. defers a mix of jobs (CPU-bound, sleeping, flaky-then-retried, async);
2. starts ``manage.py prefork_worker --concurrency N`` as a subprocess (its
   log goes to a file) and prints where to probe it;
3. shows a progress bar, from one count query twice a second;
4. once every job is finished, stops the fleet with SIGTERM (a graceful
   drain) and prints a summary: jobs, wall time, jobs per child.

Exit code 0 when every job succeeded and the fleet stopped cleanly.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

#: (task, jobs at --jobs-scale 1, arguments, description)
WORKLOAD: Sequence[tuple[str, int, dict[str, Any], str]] = (
    ("cpu_bound", 200, {"ms": 50}, "CPU-bound, ~50 ms"),
    ("sleeping", 100, {"ms": 100}, "sleeping, 100 ms"),
    ("flaky", 20, {"fail_times": 1}, "flaky: fail once, succeed on retry"),
    ("async_sleep", 50, {"ms": 100}, "async, 100 ms"),
)
#: the workload is deferred in this many interleaved rounds, so that the fleet
#: sees a mix rather than all the CPU-bound jobs first
ROUNDS = 10
REFRESH = 0.5  # seconds between two progress queries
PLAIN_EVERY = 3.0  # seconds between two progress lines when not on a terminal
BAR_WIDTH = 30
STOP_TIMEOUT = 60.0  # seconds the fleet gets to drain after SIGTERM
FINISHED = ("succeeded", "failed", "cancelled", "aborted")


@dataclasses.dataclass
class Progress:
    finished: int
    failed: int
    running: int


class Command(BaseCommand):
    help = (
        "Defer a demo workload, drain it with `prefork_worker` while showing "
        "progress, then stop the fleet and print a summary."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--jobs-scale",
            type=float,
            default=1.0,
            metavar="FLOAT",
            help="Multiply the number of jobs of each kind (default 1: 370 jobs).",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=4,
            metavar="N",
            help="Children of the fleet (default 4).",
        )
        parser.add_argument(
            "--health-port",
            type=int,
            default=0,
            metavar="PORT",
            help="Probe port of the fleet, when prefork_worker supports one "
            "(default: a free port).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        scale: float = options["jobs_scale"]
        concurrency: int = options["concurrency"]
        if not 0 < scale <= 100:
            raise CommandError(
                "--jobs-scale must be more than 0 and at most 100", returncode=2
            )
        if not 1 <= concurrency <= 64:
            raise CommandError("--concurrency must be between 1 and 64", returncode=2)
        self.tty = self.stdout.isatty()

        # The fleet logs every job (to its log file); here, the jobs deferred
        # would be one line per batch.
        logging.getLogger("procrastinate").setLevel(logging.WARNING)
        ids = self.defer_workload(scale)
        fleet, log_path, started, port = self.start_fleet(
            concurrency, options["health_port"]
        )
        try:
            done = self.follow(ids, fleet, log_path, started)
            wall = time.monotonic() - started
            per_child = self.jobs_per_child(ids)  # before the workers unregister
            probes = self.check_probes(port)
        except KeyboardInterrupt:
            self.stdout.write("\nInterrupted: stopping the fleet (SIGTERM)...")
            self.stop_fleet(fleet)
            sys.exit(130)
        except BaseException:
            self.stop_fleet(fleet)
            raise
        fleet_code, drain = self.stop_fleet(fleet)
        self.summary(ids, done, wall, per_child, probes, fleet_code, drain, log_path)

    # ------------------------------------------------------------- workload

    def defer_workload(self, scale: float) -> list[int]:
        from demo_app import tasks

        plan = [
            (getattr(tasks, name), max(1, int(count * scale + 0.5)), kwargs, text)
            for name, count, kwargs, text in WORKLOAD
        ]
        total = sum(count for _, count, _, _ in plan)
        self.stdout.write(f"Deferring {total} jobs:")
        for task, count, _, text in plan:
            self.stdout.write(f"  {count:5d}  {task.name:<28} {text}")
        began = time.monotonic()
        ids: list[int] = []
        for round_ in range(ROUNDS):
            for task, count, kwargs, _ in plan:
                n = count * (round_ + 1) // ROUNDS - count * round_ // ROUNDS
                if n:
                    ids.extend(_defer(task, kwargs, n))
        self.stdout.write(f"  deferred in {time.monotonic() - began:.2f} s\n")
        return ids

    # ---------------------------------------------------------------- fleet

    def start_fleet(
        self, concurrency: int, health_port: int
    ) -> tuple[subprocess.Popen[bytes], Path, float, int | None]:
        from procrastinate_prefork.config import table as prefork_options

        manage_py = Path(settings.BASE_DIR) / "manage.py"
        command = [
            sys.executable,
            str(manage_py),
            "prefork_worker",
            "--concurrency",
            str(concurrency),
        ]
        port = None
        if "health_port" in prefork_options.OPTIONS_BY_NAME:
            port = health_port or _free_port()
            command += ["--health-port", str(port)]
        fd, name = tempfile.mkstemp(prefix="prefork-demo-", suffix=".log")
        log_path = Path(name)
        with os.fdopen(fd, "wb") as log:
            fleet = subprocess.Popen(
                command,
                cwd=manage_py.parent,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C reaches this command only, which
                # then stops the fleet with one SIGTERM (a second one would
                # stop it at once). And it dies with us.
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        started = time.monotonic()
        shown = " ".join(["manage.py", *command[2:]])
        self.stdout.write(f"Fleet: {shown} (pid {fleet.pid})")
        self.stdout.write(f"  log:     {log_path}")
        if port is not None:
            probes = "  ".join(
                f"http://127.0.0.1:{port}/{p}" for p in ("live", "ready", "status")
            )
            self.stdout.write(f"  probes:  {probes}")
        self.describe_health_urls()
        self.stdout.write("")
        return fleet, log_path, started, port

    def describe_health_urls(self) -> None:
        from django.core.management import get_commands

        if "prefork_status" in get_commands():
            self.stdout.write(
                "  status:  python manage.py prefork_status   (the fleet "
                "table: every supervisor and child)"
            )
        urls = _prefork_urls()
        if urls:
            self.stdout.write(
                "  health view, when a web server serves this project "
                "(e.g. manage.py runserver):"
            )
            for url in urls:
                self.stdout.write(f"           http://127.0.0.1:8000/{url}")

    def check_probes(self, port: int | None) -> list[str]:
        """Ask the fleet's probe port, once, before stopping it."""
        if port is None:
            return []
        results = []
        for path in ("live", "ready", "status"):
            url = f"http://127.0.0.1:{port}/{path}"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    code, body = response.status, response.read()
            except urllib.error.HTTPError as exc:
                code, body = exc.code, exc.read()
            except OSError as exc:
                results.append(f"/{path}: {exc}")
                continue
            status = ""
            try:
                document = json.loads(body)
                if isinstance(document, dict) and "status" in document:
                    status = f" {document['status']}"
            except ValueError:
                pass
            results.append(f"/{path}: {code}{status}")
        return results

    def stop_fleet(self, fleet: subprocess.Popen[bytes]) -> tuple[int | None, float]:
        """SIGTERM, then wait for the drain. Returns (exit code, seconds)."""
        began = time.monotonic()
        if fleet.poll() is None:
            fleet.send_signal(signal.SIGTERM)
            try:
                fleet.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.stderr.write(
                    f"The fleet did not stop within {STOP_TIMEOUT:g} s: SIGKILL"
                )
                os.killpg(fleet.pid, signal.SIGKILL)
                fleet.wait()
        return fleet.returncode, time.monotonic() - began

    # ------------------------------------------------------------- progress

    def follow(
        self,
        ids: list[int],
        fleet: subprocess.Popen[bytes],
        log_path: Path,
        started: float,
    ) -> Progress:
        """Show the progress until every job is finished."""
        total = len(ids)
        samples: list[tuple[float, int]] = []
        last_line = 0.0
        while True:
            progress = _progress(ids)
            now = time.monotonic()
            samples = [s for s in samples if now - s[0] <= 3.0] + [
                (now, progress.finished)
            ]
            rate = _rate(samples)
            done = progress.finished >= total
            if self.tty:
                self.stdout.write(
                    "\r" + _bar(progress, total, rate, now - started), ending=""
                )
                self.stdout.flush()
            elif done or now - last_line >= PLAIN_EVERY:
                self.stdout.write(_bar(progress, total, rate, now - started))
                last_line = now
            if done:
                if self.tty:
                    self.stdout.write("")
                return progress
            if fleet.poll() is not None:
                if self.tty:
                    self.stdout.write("")
                tail = log_path.read_text(errors="replace").splitlines()[-20:]
                raise CommandError(
                    f"the fleet exited with code {fleet.returncode} before the "
                    "workload "
                    "was done; the end of its log:\n" + "\n".join(tail)
                )
            time.sleep(REFRESH)

    # -------------------------------------------------------------- summary

    def jobs_per_child(self, ids: list[int]) -> list[tuple[str, int]]:
        """(who, jobs) for each worker that finished jobs of the workload.

        A job keeps the id of the procrastinate worker that ran it last, until
        that worker unregisters (its row is deleted, the jobs' worker_id is
        set to NULL): so this is read before the fleet stops. The fleet table
        maps a worker id to its child's slot and pid."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT to_regclass('procrastinate_prefork_processes') IS NOT NULL"
            )
            has_fleet_table = cursor.fetchone()[0]
            if has_fleet_table:
                cursor.execute(
                    "SELECT j.worker_id, p.slot, p.pid, count(*) "
                    "FROM procrastinate_jobs AS j "
                    "LEFT JOIN procrastinate_prefork_processes AS p "
                    "  ON p.kind = 'child' AND p.worker_id = j.worker_id "
                    "WHERE j.id = ANY(%s) AND j.status = 'succeeded' "
                    "GROUP BY 1, 2, 3 ORDER BY 2 NULLS LAST, 1",
                    [ids],
                )
                rows = cursor.fetchall()
            else:
                cursor.execute(
                    "SELECT worker_id, NULL, NULL, count(*) FROM procrastinate_jobs "
                    "WHERE id = ANY(%s) AND status = 'succeeded' GROUP BY 1 ORDER BY 1",
                    [ids],
                )
                rows = cursor.fetchall()
        result = []
        for worker_id, slot, pid, count in rows:
            if worker_id is None:
                who = "worker unknown"
            elif slot is None:
                who = f"worker {worker_id}"
            else:
                who = f"child {slot} (pid {pid}, worker {worker_id})"
            result.append((who, count))
        return result

    def summary(
        self,
        ids: list[int],
        progress: Progress,
        wall: float,
        per_child: list[tuple[str, int]],
        probes: list[str],
        fleet_code: int | None,
        drain: float,
        log_path: Path,
    ) -> None:
        total = len(ids)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FILTER (WHERE type = 'deferred_for_retry'), "
                "EXTRACT(EPOCH FROM max(at) FILTER (WHERE type IN "
                "  ('succeeded', 'failed', 'aborted')) "
                "  - min(at) FILTER (WHERE type = 'started')) "
                "FROM procrastinate_events WHERE job_id = ANY(%s)",
                [ids],
            )
            retries, busy = cursor.fetchone()
        succeeded = total - progress.failed
        write = self.stdout.write
        write("")
        write("Summary")
        write(
            f"  jobs:       {total}: {succeeded} succeeded, {progress.failed} failed; "
            f"{retries} retried after a failure"
        )
        write(
            f"  wall time:  {wall:.1f} s from the fleet's start to the last job "
            f"({total / wall:.1f} jobs/s)"
        )
        if busy:
            write(
                f"  job time:   {float(busy):.1f} s from the first job started to the "
                f"last finished ({total / float(busy):.1f} jobs/s)"
            )
        write("  per child:")
        most = max((count for _, count in per_child), default=1)
        for who, count in per_child:
            bar = "#" * max(1, round(count / most * 20))
            write(f"    {who:<36} {count:5d}  {bar}")
        if probes:
            write(f"  probes:     {'   '.join(probes)}   (asked before stopping)")
        write(
            f"  fleet:      stopped with SIGTERM, exit code {fleet_code} after "
            f"{drain:.1f} s (log: {log_path})"
        )
        write("")
        children = sum(1 for who, _ in per_child if who.startswith("child"))
        if progress.failed == 0 and fleet_code == 0:
            write(
                f"All {total} jobs succeeded in {wall:.1f} s ({total / wall:.1f} "
                "jobs/s) "
                f"on {children or len(per_child)} children."
            )
            return
        problems = []
        if progress.failed:
            problems.append(f"{progress.failed} of {total} jobs failed")
        if fleet_code != 0:
            problems.append(f"the fleet exited with code {fleet_code}")
        raise CommandError("; ".join(problems) + f" (see {log_path})")


def _defer(task: Any, kwargs: dict[str, Any], count: int) -> list[int]:
    batch_defer = getattr(task, "batch_defer", None)  # procrastinate 3.1+
    if batch_defer is not None:
        return list(batch_defer(*([kwargs] * count)))
    return [task.defer(**kwargs) for _ in range(count)]


def _progress(ids: list[int]) -> Progress:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE status::text = ANY(%s)), "
            "count(*) FILTER (WHERE status = 'failed'), "
            "count(*) FILTER (WHERE status = 'doing') "
            "FROM procrastinate_jobs WHERE id = ANY(%s)",
            [list(FINISHED), ids],
        )
        finished, failed, running = cursor.fetchone()
    return Progress(finished, failed, running)


def _rate(samples: list[tuple[float, int]]) -> float:
    """Jobs per second over the samples (the last few seconds)."""
    (t0, n0), (t1, n1) = samples[0], samples[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def _bar(progress: Progress, total: int, rate: float, elapsed: float) -> str:
    share = progress.finished / total if total else 1.0
    filled = int(share * BAR_WIDTH)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    failed = f"  {progress.failed} failed" if progress.failed else ""
    return (
        f"  [{bar}] {progress.finished:>{len(str(total))}}/{total} {share:4.0%}  "
        f"{rate:6.1f} jobs/s  {progress.running} running  {elapsed:5.1f} s{failed}  "
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the fleet, before exec: get SIGTERM (a drain) if this command dies."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def _prefork_urls() -> list[str]:
    """The paths of procrastinate_prefork's Django URLs in this project, if
    the URL configuration includes them."""
    try:
        from django.urls import URLResolver, get_resolver

        for entry in get_resolver().url_patterns:
            if not isinstance(entry, URLResolver):
                continue
            module = getattr(entry.urlconf_module, "__name__", "")
            if module == "procrastinate_prefork.contrib.django.urls":
                prefix = str(entry.pattern)
                return [prefix + str(sub.pattern) for sub in entry.url_patterns]
    except Exception:  # a missing or broken URLconf: no URLs to show
        return []
    return []
