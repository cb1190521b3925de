"""The work every benchmarked worker runs: one definition, so that stock
procrastinate, procrastinate-prefork and Celery execute the same bytecode."""

from __future__ import annotations

import os
import time


def spin(iterations: int) -> int:
    """Pure-Python CPU work holding the GIL, sized by an iteration count (the
    harness calibrates iterations per millisecond once, before the run): a
    deadline loop would stretch with the machine's load instead of costing a
    fixed amount of CPU."""
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


class _TaskCpu:
    pid = 0
    fd = -1
    count = 0
    seconds = 0.0


def cpu_task(iterations: int) -> None:
    """``spin`` as the benchmarked CPU task: also adds the CPU time the task
    itself took (its thread's) to ``$BENCH_TASK_STATS/<pid>``, so that the
    harness can tell the task's own cost (which grows when both cores are busy:
    shared caches, SMT siblings) from the worker's overhead around it."""
    start = time.thread_time()
    spin(iterations)
    used = time.thread_time() - start
    if _TaskCpu.pid != os.getpid():
        _TaskCpu.pid, _TaskCpu.count, _TaskCpu.seconds = os.getpid(), 0, 0.0
        directory = os.environ.get("BENCH_TASK_STATS")
        _TaskCpu.fd = (
            os.open(
                os.path.join(directory, f"task-{_TaskCpu.pid}"),
                os.O_WRONLY | os.O_CREAT,
                0o644,
            )
            if directory
            else -1
        )
    _TaskCpu.count += 1
    _TaskCpu.seconds += used
    if _TaskCpu.fd >= 0:
        os.pwrite(
            _TaskCpu.fd,
            f"{_TaskCpu.count} {_TaskCpu.seconds!r}\n".ljust(48).encode(),
            0,
        )


def task_cpu_totals(directory: str) -> tuple[int, float]:
    """(tasks, CPU seconds) recorded by ``cpu_task`` in ``directory``."""
    count, seconds = 0, 0.0
    for name in os.listdir(directory):
        if name.startswith("task-"):
            with open(os.path.join(directory, name)) as f:
                parts = f.read().split()
            if len(parts) >= 2:
                count += int(parts[0])
                seconds += float(parts[1])
    return count, seconds


def calibrate(target_ms: float = 50.0, rounds: int = 7) -> float:
    """Iterations per millisecond of ``spin`` in this process: the fastest of
    ``rounds`` runs (the least disturbed by other processes)."""
    probe = 200_000
    best = min(_timed(probe) for _ in range(2))
    iterations = max(probe, int(probe * target_ms / (best * 1000)))
    best = min(_timed(iterations) for _ in range(rounds))
    return iterations / (best * 1000)


def _timed(iterations: int) -> float:
    start = time.perf_counter()
    spin(iterations)
    return time.perf_counter() - start
