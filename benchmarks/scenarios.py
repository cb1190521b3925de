"""The measurements: drains, recovery, and the life of an idle fleet
(start-up, memory, sessions, shutdown). Each function runs one repetition of
one setup and returns a plain dict for ``docs/benchmarks.json``."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import random
import signal
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from .harness import (
    BenchError,
    CpuMeter,
    Databases,
    Redis,
    Workers,
    background_busy,
    connect,
    dbname_of,
    defer,
    drain_window,
    postmaster_pid,
    server_pids,
    sessions,
    unfinished,
    wait_for,
)
from .work import task_cpu_totals


@dataclasses.dataclass
class Context:
    dbs: Databases
    workdir: Path
    redis: Redis | None
    iters_per_ms: float
    settle: float = 2.0  # after every worker is ready, before inserting jobs
    poll: float = 1.0  # seconds between the harness's questions during a drain
    drain_timeout: float = 900.0
    quiet_below: float | None = None  # wait for the machine to calm down first
    quiet_timeout: float = 120.0
    log: Callable[[str], None] = print

    def wait_quiet(self) -> float:
        """Before a measurement: wait (at most ``quiet_timeout``) until other
        people's processes use less than ``quiet_below`` of the machine's CPU
        over one second. Returns the last measured share."""
        deadline = time.monotonic() + self.quiet_timeout
        busy = background_busy(1.0)
        if self.quiet_below is None or busy <= self.quiet_below:
            return busy
        self.log(
            f"  machine busy ({busy:.0%} of its CPU): waiting up to "
            f"{self.quiet_timeout:g} s for it to drop below {self.quiet_below:.0%}"
        )
        while busy > self.quiet_below and time.monotonic() < deadline:
            busy = background_busy(1.0)
        return busy

    def task_args(self, spec: dict[str, Any]) -> dict[str, Any]:
        if spec["task"] == "cpu":
            return {"iterations": round(spec["ms"] * self.iters_per_ms)}
        return dict(spec.get("args") or {})


#: What is drained. ``kinds`` in the order of the table; ``celery`` only runs
#: when Redis and Celery are available; ``stock_procs`` only for N >= 2 (at
#: N = 1 it is the same thing as ``stock``).
DRAINS: dict[str, dict[str, Any]] = {
    "cpu50": {
        "title": "CPU-bound sync jobs, 50 ms",
        "task": "cpu",
        "ms": 50,
        "count": 200,
        "ns": (1, 2, 4),
        "kinds": ("stock", "stock_procs", "prefork", "celery"),
    },
    "cpu20": {
        "title": "CPU-bound sync jobs, 20 ms",
        "task": "cpu",
        "ms": 20,
        "count": 400,
        "ns": (1, 2, 4),
        "kinds": ("stock", "stock_procs", "prefork", "celery"),
    },
    "noop_sync": {
        "title": "No-op sync jobs",
        "task": "noop_sync",
        "count": 5000,
        "ns": (1, 2),
        "kinds": ("stock", "stock_procs", "prefork", "celery"),
    },
    "noop_async": {
        "title": "No-op async jobs",
        "task": "noop_async",
        "count": 5000,
        "ns": (1, 2),
        "kinds": ("stock", "stock_procs", "prefork"),
    },
    "sleep50": {
        "title": "Sleep-bound sync jobs, 50 ms",
        "task": "sleep",
        "args": {"ms": 50},
        "count": 400,
        "ns": (4,),
        "kinds": ("stock", "stock_procs", "prefork", "celery"),
    },
}


def drain_setups(
    name: str,
    ns: tuple[int, ...] | None,
    celery: bool,
    kinds: tuple[str, ...] | None = None,
) -> list[tuple[str, int]]:
    spec = DRAINS[name]
    setups = []
    for n in spec["ns"]:
        if ns and n not in ns:
            continue
        for kind in spec["kinds"]:
            if kind == "stock_procs" and n == 1:
                continue
            if kind == "celery" and not celery:
                continue
            if kinds and kind not in kinds:
                continue
            setups.append((kind, n))
    return setups


# ----------------------------------------------------------------------- drains


def drain(ctx: Context, name: str, kind: str, n: int, count: int) -> dict[str, Any]:
    """One repetition: start the setup, wait until it is ready and settled,
    insert ``count`` jobs at once, wait (polling rarely) until all are done,
    read the first start and last end, stop the setup."""
    spec = DRAINS[name]
    task, args = spec["task"], ctx.task_args(spec)
    background = ctx.wait_quiet()
    with ctx.dbs.fresh() as url, connect(url) as conn:
        broker = ctx.redis.url if (kind == "celery" and ctx.redis) else None
        if broker and ctx.redis:
            ctx.redis.flush()
        workers = Workers(kind, n, url, ctx.workdir, broker=broker).start()
        try:
            workers.wait_ready(conn)
            time.sleep(ctx.settle)
            if kind == "celery":
                result = _drain_celery(ctx, workers, task, args, count)
            else:
                result = _drain_procrastinate(
                    ctx, workers, conn, url, task, args, count
                )
            tasks, task_cpu = task_cpu_totals(str(workers.task_stats))
            if tasks:
                result["task_cpu_s"] = round(task_cpu, 4)
        except BaseException:
            workers.kill()
            raise
        try:
            workers.stop()
        except BenchError as exc:
            ctx.log(f"  warning: {exc}")
    result.update(
        scenario=name,
        kind=kind,
        n=n,
        jobs=count,
        background_before=round(background, 3),
    )
    result["rate"] = (
        round(count / result["seconds"], 2) if result["seconds"] > 0 else None
    )
    return result


def _drain_procrastinate(
    ctx: Context,
    workers: Workers,
    conn: Any,
    url: str,
    task: str,
    args: dict[str, Any],
    count: int,
) -> dict[str, Any]:
    dbname = dbname_of(url)
    harness_backend = conn.info.backend_pid
    postmaster = postmaster_pid(url)
    meter = CpuMeter(
        workers.all_pids,
        lambda: server_pids(postmaster, dbname, exclude=[harness_backend]),
        harness_backend,
    )
    meter.start()
    defer(conn, task, count, args)
    deadline = time.monotonic() + ctx.drain_timeout
    while unfinished(conn):
        if time.monotonic() > deadline:
            raise BenchError(
                f"drain of {count} {task} jobs not done after {ctx.drain_timeout:g} s"
            )
        workers.check_alive()
        time.sleep(ctx.poll)
    cpu = meter.stop()
    succeeded, failed, seconds = drain_window(conn)
    if succeeded != count:
        raise BenchError(f"{succeeded} of {count} jobs succeeded ({failed} failed)")
    return {"seconds": round(seconds, 4), "cpu": cpu}


def _drain_celery(
    ctx: Context, workers: Workers, task: str, args: dict[str, Any], count: int
) -> dict[str, Any]:
    """Celery has no bulk insert: the tasks are published while the worker's
    consumer is cancelled, then the consumer is added back, so that the drain
    is not limited by the harness's publishing speed."""
    from celery import Celery

    assert ctx.redis is not None
    client = Celery("bench-harness", broker=ctx.redis.url)
    client.conf.broker_connection_retry_on_startup = True
    node = [workers.celery_node]
    replies = client.control.cancel_consumer(
        "celery", destination=node, reply=True, timeout=10
    )
    if not replies:
        raise BenchError("Celery worker did not answer cancel_consumer")
    with client.producer_or_acquire() as producer:
        for _ in range(count):
            client.send_task(task, kwargs=args, producer=producer)
    meter = CpuMeter(workers.all_pids, ctx.redis.pids)
    meter.start()
    replies = client.control.add_consumer(
        "celery", destination=node, reply=True, timeout=10
    )
    if not replies:
        raise BenchError("Celery worker did not answer add_consumer")
    deadline = time.monotonic() + ctx.drain_timeout
    while (progress := workers.celery_progress())[0] < count:
        if time.monotonic() > deadline:
            raise BenchError(
                f"Celery drain: {progress[0]} of {count} done after "
                f"{ctx.drain_timeout:g} s"
            )
        workers.check_alive()
        time.sleep(ctx.poll)
    cpu = meter.stop()
    done, first, last = workers.celery_progress()
    if done != count:
        raise BenchError(f"Celery ran {done} tasks, {count} were sent")
    client.close()
    return {"seconds": round(last - first, 4), "cpu": cpu}


# --------------------------------------------------------------------- recovery


def recovery(ctx: Context, n: int, kills: int) -> dict[str, Any]:
    """SIGKILL a child in the middle of a job, ``kills`` times; for each,
    the time from the kill to the job's next ``started`` event (and to its
    ``deferred_for_retry`` event: the supervisor's part of it)."""
    samples = []
    rng = random.Random(n)
    ctx.wait_quiet()
    with ctx.dbs.fresh() as url, connect(url) as conn:
        fleet = Workers("prefork", n, url, ctx.workdir).start()
        try:
            fleet.wait_ready(conn)
            time.sleep(ctx.settle)
            for _ in range(kills):
                _wait_all_idle(fleet, n)
                row = conn.execute(
                    "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW('default', 'hold', 0,"
                    " NULL, NULL, '{\"seconds\": 30}'::jsonb, NULL)"
                    "::procrastinate_job_to_defer_v1])"
                ).fetchone()
                assert row is not None
                job_id = int(row[0][0])
                victim = _busy_with(fleet, job_id)
                time.sleep(rng.uniform(0.05, 0.3))  # somewhere in the middle of the job
                killed_at = time.time()
                os.kill(victim, signal.SIGKILL)
                retried_at, started_at = wait_for(
                    functools.partial(_restart_times, conn, job_id),
                    30,
                    0.05,
                    f"job {job_id} to start again",
                )
                samples.append(
                    {
                        "kill_to_start_s": round(started_at - killed_at, 4),
                        "kill_to_retry_s": round(retried_at - killed_at, 4),
                    }
                )
                wait_for(
                    functools.partial(_succeeded, conn, job_id),
                    30,
                    0.05,
                    f"job {job_id} to succeed",
                )
        except BaseException:
            fleet.kill()
            raise
        fleet.stop()
    latencies = [s["kill_to_start_s"] for s in samples]
    return {
        "n": n,
        "kills": kills,
        "samples": samples,
        "p50_s": round(percentile(latencies, 50), 4),
        "p95_s": round(percentile(latencies, 95), 4),
        "max_s": round(max(latencies), 4),
        "retry_p50_s": round(
            percentile([s["kill_to_retry_s"] for s in samples], 50), 4
        ),
    }


def _wait_all_idle(fleet: Workers, n: int) -> None:
    def idle() -> bool:
        fleet.check_alive()
        titles = fleet.child_titles()
        return len(titles) == n and all("[idle]" in t for t in titles.values())

    wait_for(idle, 30, 0.05, f"{n} idle children")


def _busy_with(fleet: Workers, job_id: int) -> int:
    marker = f"[busy job {job_id} "

    def find() -> int | None:
        for pid, title in fleet.child_titles().items():
            if marker in title:
                return pid
        return None

    return wait_for(find, 30, 0.01, f"a child busy with job {job_id}")


def _restart_times(conn: Any, job_id: int) -> tuple[float, float] | None:
    rows = conn.execute(
        "SELECT type::text, extract(epoch FROM at) FROM procrastinate_events"
        " WHERE job_id = %s ORDER BY id",
        [job_id],
    ).fetchall()
    started = [float(at) for kind, at in rows if kind == "started"]
    retried = [float(at) for kind, at in rows if kind == "deferred_for_retry"]
    if len(started) >= 2 and retried:
        return retried[0], started[1]
    return None


def _succeeded(conn: Any, job_id: int) -> bool:
    row = conn.execute(
        "SELECT status::text FROM procrastinate_jobs WHERE id = %s", [job_id]
    ).fetchone()
    return bool(row) and row[0] == "succeeded"


# -------------------------------------------------------------------- lifecycle


def lifecycle(ctx: Context, kind: str, n: int) -> dict[str, Any]:
    """Start-up until every worker is ready; memory per process and database
    sessions while idle and after a burst of jobs; SIGTERM until exit."""
    ctx.wait_quiet()
    with ctx.dbs.fresh() as url, connect(url) as conn:
        broker = ctx.redis.url if (kind == "celery" and ctx.redis) else None
        workers = Workers(kind, n, url, ctx.workdir, broker=broker)
        try:
            workers.start()
            ready_at = workers.wait_ready(conn)
            startup = ready_at - workers.spawned_at
            time.sleep(ctx.settle)
            memory = _memory(workers)
            result: dict[str, Any] = {
                "kind": kind,
                "n": n,
                "startup_s": round(startup, 3),
                "memory": memory,
            }
            if kind != "celery":
                idle = sessions(conn)
                defer(conn, "noop_sync", 4 * n, {})
                wait_for(lambda: not unfinished(conn), 60, 0.2, "the burst of jobs")
                time.sleep(1.0)
                busy = sessions(conn)
                key = "prefork" if kind == "prefork" else "stock"
                result["sessions_idle"] = idle[key]
                result["sessions_after_jobs"] = busy[key]
                result["sessions_other"] = max(idle["other"], busy["other"])
            time.sleep(1.0)
            result["shutdown_s"] = round(workers.stop(), 3)
        except BaseException:
            workers.kill()
            raise
    return result


def _memory(workers: Workers) -> dict[str, Any]:
    """USS/PSS/RSS (MiB) of each process of the setup; ``per_child`` are the
    job-running processes, ``total_pss`` the whole setup's real footprint."""
    mib = 1024 * 1024
    per: dict[int, dict[str, float]] = {}
    for pid in workers.all_pids():
        with contextlib.suppress(psutil.Error):
            info = psutil.Process(pid).memory_full_info()
            per[pid] = {
                "uss": info.uss / mib,
                "pss": info.pss / mib,
                "rss": info.rss / mib,
            }
    job_pids = set(workers.job_processes())
    children = [v for pid, v in per.items() if pid in job_pids]
    others = [v for pid, v in per.items() if pid not in job_pids]
    if not children:
        raise BenchError(f"{workers.kind}: no job processes found")
    return {
        "per_child_uss": round(statistics.median(c["uss"] for c in children), 2),
        "per_child_pss": round(statistics.median(c["pss"] for c in children), 2),
        "per_child_rss": round(statistics.median(c["rss"] for c in children), 2),
        "parent_pss": round(sum(o["pss"] for o in others), 2),
        "total_pss": round(sum(v["pss"] for v in per.values()), 2),
        "total_uss": round(sum(v["uss"] for v in per.values()), 2),
        "processes": len(per),
    }


# -------------------------------------------------------------------- statistics


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p95 of 20 samples is the 19th smallest)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), -(-int(pct * len(ordered)) // 100)))
    return ordered[rank - 1]


def summarize(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }
