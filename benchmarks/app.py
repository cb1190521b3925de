"""The plain procrastinate app of the benchmarks, run unchanged by stock
``procrastinate worker`` and by ``procrastinate-prefork``.

    procrastinate --app benchmarks.app.app worker --concurrency 2
    procrastinate-prefork --app benchmarks.app.app worker --concurrency 2
"""

from __future__ import annotations

import os
import time

import procrastinate

from .work import cpu_task

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ.get("DATABASE_URL", "")
    ),
)


@app.task(name="cpu")
def cpu(iterations: int) -> None:
    cpu_task(iterations)


@app.task(name="noop_sync")
def noop_sync() -> None:
    return None


@app.task(name="noop_async")
async def noop_async() -> None:
    return None


@app.task(name="sleep")
def sleep(ms: float = 50) -> None:
    time.sleep(ms / 1000)


@app.task(name="hold", pass_context=True)
def hold(context: procrastinate.JobContext, seconds: float = 30) -> None:
    """The victim of the recovery benchmark: it sleeps on its first attempt
    (and gets SIGKILLed meanwhile) and returns at once when retried."""
    if context.job.attempts == 0:
        time.sleep(seconds)
