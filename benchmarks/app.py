"""The plain procrastinate app of the benchmarks, run unchanged by stock
``procrastinate worker`` and by ``procrastinate-prefork``.

    procrastinate --app benchmarks.app.app worker --concurrency 2
    procrastinate-prefork --app benchmarks.app.app worker --concurrency 2
"""

from __future__ import annotations

import asyncio
import os
import time

import procrastinate
import psycopg

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


@app.task(name="sleep_async")
async def sleep_async(ms: float = 200) -> None:
    """An I/O-bound job: it waits, as a call to another service does."""
    await asyncio.sleep(ms / 1000)


@app.task(name="hold", pass_context=True)
def hold(context: procrastinate.JobContext, seconds: float = 30) -> None:
    """The victim of the recovery benchmark: it sleeps on its first attempt
    (and gets SIGKILLed meanwhile) and returns at once when retried."""
    if context.job.attempts == 0:
        time.sleep(seconds)


#: the task's own session, one per process (opened at its first job): the
#: database-cost benchmark counts its statements apart, by this name
TASK_APPNAME = "bench-task"
_own: list[psycopg.Connection] = []


@app.task(name="insert_one")
def insert_one(n: int = 0) -> None:
    """One insert of the task's own, as a job that writes something does."""
    if not _own or _own[0].closed:
        _own[:] = [
            psycopg.connect(
                os.environ.get("DATABASE_URL", ""),
                autocommit=True,
                application_name=TASK_APPNAME,
            )
        ]
    _own[0].execute("INSERT INTO bench_rows (n) VALUES (%s)", [n])
