"""The work every benchmarked worker runs: one definition, so that stock
procrastinate, procrastinate-prefork and Celery execute the same bytecode."""

from __future__ import annotations

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
