"""The procrastinate app of the chaos test, the outage test and the soak script.

Every task's final state is known in advance, whatever kills it meets on the
way (with a crash-retry cap high enough never to fail it):

    chaos_cpu, chaos_sleep, chaos_async, chaos_locked   succeed
    chaos_flaky    fails its first run, then succeeds (retry strategy)
    chaos_fail     always fails: ends ``failed`` after its retries
    chaos_queued   deferred with ``queueing_lock`` = ``lock``: succeeds, unless
                   a recovery cannot put it back to ``todo`` (the driver
                   accepts ``failed`` then)
    chaos_overrun  sleeps; run under a time limit on one host: ends ``failed``
                   if it sleeps past the limit, ``succeeded`` otherwise (the
                   driver decides from its arguments)

Each run appends events to ``$PREFORK_TEST_RESULTS/chaos-<pid>.log``, one line
each: ``<event> <job id> <attempt> <pid> <unix time> <lock or ->`` where the
event is ``start``, ``end`` (the task body returned) or ``raise`` (it is about
to raise). A run with a ``start`` and neither ``end`` nor ``raise`` was
interrupted. One file per process, opened in append mode and written with a
single ``write`` per line: cheap enough for a soak of hours, and readable
incrementally (``tests/chaos_driver.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import procrastinate

from . import events

# the supervisors' structured records, e.g. ``time_limit`` for the books
events.install()

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ.get("DATABASE_URL", "")
    ),
)

#: task name -> final status it must end in
EXPECTED_STATUS = {
    "chaos_cpu": "succeeded",
    "chaos_sleep": "succeeded",
    "chaos_async": "succeeded",
    "chaos_locked": "succeeded",
    "chaos_flaky": "succeeded",
    "chaos_fail": "failed",
    "chaos_queued": "succeeded",
    "chaos_overrun": "succeeded",
}
#: attempts the retry strategy of the failing tasks allows
FAIL_MAX_ATTEMPTS = 2

_log: dict[str, Any] = {"pid": None, "fd": None}


def _mark(context: procrastinate.JobContext, event: str) -> None:
    results = os.environ.get("PREFORK_TEST_RESULTS")
    if not results:
        return
    pid = os.getpid()
    if _log["pid"] != pid:  # first write in this process
        _log["fd"] = os.open(
            os.path.join(results, f"chaos-{pid}.log"),
            os.O_WRONLY | os.O_CREAT | os.O_APPEND,
            0o644,
        )
        _log["pid"] = pid
    job = context.job
    line = (
        f"{event} {job.id} {job.attempts} {pid} {time.time():.6f} {job.lock or '-'}\n"
    )
    os.write(_log["fd"], line.encode())
    if os.environ.get("CHAOS_STDOUT"):
        # a word without newline: it waits in the block-buffered stdout until
        # the child exits (tests/chaos_log_pipe.py); a broken pipe is no
        # failure of the job
        with contextlib.suppress(OSError):
            print(event, end=" ")


def _burn(ms: float) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass


@app.task(name="chaos_cpu", pass_context=True)
def chaos_cpu(context: procrastinate.JobContext, ms: float = 20, **_: Any) -> None:
    _mark(context, "start")
    _burn(ms)
    _mark(context, "end")


@app.task(name="chaos_sleep", pass_context=True)
def chaos_sleep(
    context: procrastinate.JobContext, seconds: float = 0.3, **_: Any
) -> None:
    _mark(context, "start")
    time.sleep(seconds)
    _mark(context, "end")


@app.task(name="chaos_async", pass_context=True)
async def chaos_async(
    context: procrastinate.JobContext, seconds: float = 0.2, **_: Any
) -> None:
    _mark(context, "start")
    await asyncio.sleep(seconds)
    _mark(context, "end")


@app.task(name="chaos_locked", pass_context=True)
def chaos_locked(
    context: procrastinate.JobContext, seconds: float = 0.1, **_: Any
) -> None:
    """Deferred with a procrastinate ``lock``: two jobs of one lock never run
    at the same time."""
    _mark(context, "start")
    time.sleep(seconds)
    _mark(context, "end")


@app.task(name="chaos_queued", pass_context=True)
def chaos_queued(
    context: procrastinate.JobContext, seconds: float = 0.5, **_: Any
) -> None:
    """Deferred with ``queueing_lock`` and ``lock`` equal."""
    _mark(context, "start")
    time.sleep(seconds)
    _mark(context, "end")


@app.task(name="chaos_overrun", pass_context=True)
def chaos_overrun(
    context: procrastinate.JobContext, seconds: float = 0.5, **_: Any
) -> None:
    """Given a time limit (``--task-timeout chaos_overrun=...``) on one host."""
    _mark(context, "start")
    time.sleep(seconds)
    _mark(context, "end")


@app.task(
    name="chaos_flaky",
    pass_context=True,
    retry=procrastinate.RetryStrategy(max_attempts=20, wait=0),
)
def chaos_flaky(context: procrastinate.JobContext, ms: float = 5, **_: Any) -> None:
    _mark(context, "start")
    _burn(ms)
    if context.job.attempts == 0:
        _mark(context, "raise")
        raise RuntimeError("chaos_flaky: first run fails")
    _mark(context, "end")


@app.task(
    name="chaos_fail",
    pass_context=True,
    retry=procrastinate.RetryStrategy(max_attempts=FAIL_MAX_ATTEMPTS, wait=0),
)
def chaos_fail(context: procrastinate.JobContext, ms: float = 5, **_: Any) -> None:
    _mark(context, "start")
    _burn(ms)
    _mark(context, "raise")
    raise RuntimeError("chaos_fail: always fails")


@app.task(name="chaos_strict")
def chaos_strict(n: int) -> int:
    """Takes exactly one integer argument: bad-input tests defer it with
    arguments it rejects."""
    if not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    return n + 1
