"""procrastinate's periodic deferrer, a side task of every Worker: run in
one child per host, not in each (the Worker's own private method, gated)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from procrastinate import worker as worker_module

#: how often a child looks whether it runs the periodic deferrer (seconds)
DEFERRER_POLL = 0.2


def gate_periodic_deferrer(
    worker: worker_module.Worker,
    designated: Callable[[], bool],
    on_change: Callable[[bool], None],
    poll: float = DEFERRER_POLL,
) -> None:
    """Run ``worker``'s periodic deferrer (procrastinate starts it as a side
    task in every worker) only while ``designated()``: started when it
    becomes true, cancelled when it becomes false, ``on_change`` told each
    time. A deferrer that starts defers its tasks' latest tick (if within
    their ``max_delay``): a hand-over quicker than a task's period loses no
    tick of it."""
    original: Callable[[], Any] = worker._periodic_deferrer  # pyright: ignore[reportPrivateUsage]

    async def gated() -> Any:
        while True:
            while not designated():
                await asyncio.sleep(poll)
            on_change(True)
            task = asyncio.ensure_future(original())
            try:
                while designated() and not task.done():
                    await asyncio.wait({task}, timeout=poll)
            finally:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if task.done() and not task.cancelled():
                # it ended by itself (no periodic task: as in every worker),
                # or failed: procrastinate's side-task monitor decides
                return task.result()
            on_change(False)

    # ignore: we replace a method of this one Worker on purpose
    worker._periodic_deferrer = gated  # type: ignore[method-assign]
