"""Demo tasks: CPU-bound, sleeping (sync and async), flaky, and no-op.

Registered on procrastinate's Django app, found by its autodiscovery of
``tasks`` modules.
"""

from __future__ import annotations

import asyncio
import time

import procrastinate
from procrastinate.contrib.django import app


def _spin(iterations: int) -> int:
    """Pure-Python arithmetic holding the GIL: the CPU-bound workload."""
    x = 1
    for _ in range(iterations):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def _calibrate(rounds: int = 5, chunk: int = 20_000) -> int:
    """Iterations of ``_spin`` per millisecond on this machine.

    The best of a few short rounds, so a round slowed down by another process
    does not skew it. Done once, at import: a prefork supervisor that imports
    the tasks before forking hands the same figure to every child.
    """
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        _spin(chunk)
        best = min(best, time.perf_counter() - start)
    return max(1, int(chunk / (best * 1000)))


ITERATIONS_PER_MS = _calibrate()


@app.task(queue="default", name="demo_app.tasks.cpu_bound")
def cpu_bound(ms: int = 50) -> int:
    """A fixed amount of CPU work that takes about ``ms`` ms on an idle core.

    Fixed work, not a deadline: when processes or threads compete for a core
    (or for the GIL), it takes longer, as real CPU-bound work does.
    """
    return _spin(ms * ITERATIONS_PER_MS)


@app.task(queue="default", name="demo_app.tasks.sleeping")
def sleeping(ms: int = 50) -> None:
    """Blocks for ``ms`` ms without using the CPU (I/O-like work)."""
    time.sleep(ms / 1000)


@app.task(
    queue="default",
    name="demo_app.tasks.flaky",
    pass_context=True,
    retry=procrastinate.RetryStrategy(max_attempts=3, wait=0),
)
def flaky(context: procrastinate.JobContext, fail_times: int = 1) -> None:
    """Fails on its first ``fail_times`` attempts, then succeeds.

    With 3 retries, up to ``fail_times=3`` eventually succeeds.
    """
    attempts = context.job.attempts  # 0 on the first run
    if attempts < fail_times:
        raise RuntimeError(f"flaky: failing on attempt {attempts + 1} of {fail_times}")


@app.task(queue="default", name="demo_app.tasks.async_sleep")
async def async_sleep(ms: int = 50) -> None:
    """Awaits ``ms`` ms on the worker's event loop."""
    await asyncio.sleep(ms / 1000)


@app.task(queue="default", name="demo_app.tasks.noop")
def noop() -> None:
    """Does nothing: measures the per-job overhead."""
