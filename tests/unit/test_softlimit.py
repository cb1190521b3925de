"""The async half of soft limits: a cancellation caused by the limit reaches
the task as SoftTimeLimitExceeded; any other goes through unchanged."""

from __future__ import annotations

import asyncio
import sys
import types

import pytest

from procrastinate_prefork import SoftTimeLimitExceeded
from procrastinate_prefork.child import softlimit


def _context(job_id: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(job=types.SimpleNamespace(id=job_id))


async def _run(limit: float | None, cancel_after: float | None = None) -> list[str]:
    seen: list[str] = []
    limits = softlimit.SoftLimits(lambda task: limit)

    async def task() -> None:
        try:
            await asyncio.sleep(5)
        except BaseException as exc:
            seen.append(type(exc).__name__)
            raise
        seen.append("end")

    async def job() -> None:
        limits.job_started(1, "t")
        try:
            await limits.async_middleware(task, _context(1), None)
        finally:
            limits.job_ended(1)

    running = asyncio.ensure_future(job())
    if cancel_after is not None:
        await asyncio.sleep(cancel_after)
        running.cancel()
    try:
        await running
    except BaseException as exc:
        seen.append(f"job: {type(exc).__name__}")
    if hasattr(running, "cancelling") and not running.cancelled():
        seen.append(f"cancelling={running.cancelling()}")
    return seen


def test_the_task_sees_soft_time_limit_exceeded():
    seen = asyncio.run(_run(limit=0.05))
    assert seen[:2] == ["SoftTimeLimitExceeded", "job: SoftTimeLimitExceeded"]
    # the limit's cancellation is taken back (Task.uncancel, Python 3.11+)
    assert seen[2:] == (["cancelling=0"] if sys.version_info >= (3, 11) else [])


def test_another_cancellation_goes_through_unchanged():
    assert asyncio.run(_run(limit=None, cancel_after=0.05)) == [
        "CancelledError",
        "job: CancelledError",
    ]


def test_a_task_not_started_yet_raises_at_once():
    limits = softlimit.SoftLimits(lambda task: 0.01)

    async def main() -> None:
        limits.job_started(2, "t")
        await asyncio.sleep(0.05)  # the limit passes before the task starts
        with pytest.raises(SoftTimeLimitExceeded):
            limits.sync_middleware(lambda: None, _context(2), None)

    asyncio.run(main())
