"""The plain procrastinate app the integration tests run under the fleet.

Tasks leave a marker file per run in $PREFORK_TEST_RESULTS (job id, attempt,
pid), so tests can see which process ran what without extra DB sessions.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import procrastinate

from . import events

events.install()

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ.get("DATABASE_URL", "")
    ),
)


def _mark(context: procrastinate.JobContext, phase: str) -> None:
    results = os.environ.get("PREFORK_TEST_RESULTS")
    if not results:
        return
    job = context.job
    path = os.path.join(results, f"{job.id}.{job.attempts}.{phase}")
    with open(path, "w") as f:
        f.write(f"{os.getpid()} {time.time()}\n")


def burn(ms: float) -> int:
    end = time.perf_counter() + ms / 1000
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


@app.task(name="cpu", pass_context=True)
def cpu(context: procrastinate.JobContext, ms: float = 20) -> None:
    _mark(context, "start")
    burn(ms)
    _mark(context, "end")


@app.task(name="sleep", pass_context=True)
def sleep(context: procrastinate.JobContext, seconds: float = 1.0) -> None:
    _mark(context, "start")
    time.sleep(seconds)
    _mark(context, "end")


@app.task(name="async_sleep", pass_context=True)
async def async_sleep(context: procrastinate.JobContext, seconds: float = 0.1) -> None:
    _mark(context, "start")
    await asyncio.sleep(seconds)
    _mark(context, "end")


@app.task(name="die", pass_context=True)
def die(context: procrastinate.JobContext, code: int = 13) -> None:
    """Kills its own process, like a segfault or the OOM killer would."""
    _mark(context, "start")
    os._exit(code)


@app.task(name="die_once", pass_context=True)
def die_once(context: procrastinate.JobContext) -> None:
    _mark(context, "start")
    if context.job.attempts == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    _mark(context, "end")


def _first_run_fails(
    context: procrastinate.JobContext, first: float, later: float
) -> None:
    _mark(context, "start")
    time.sleep(first if context.job.attempts == 0 else later)
    if context.job.attempts == 0:
        raise RuntimeError("the first run fails")
    _mark(context, "end")


@app.task(name="first_run_fails", pass_context=True)
def first_run_fails(
    context: procrastinate.JobContext, first: float = 4, later: float = 1
) -> None:
    """The first run fails after ``first`` seconds, a later one succeeds: which
    outcome the job row ends with tells which run wrote it."""
    _first_run_fails(context, first, later)


@app.task(
    name="first_run_retries",
    pass_context=True,
    retry=procrastinate.RetryStrategy(max_attempts=5, wait=0),
)
def first_run_retries(
    context: procrastinate.JobContext, first: float = 4, later: float = 1
) -> None:
    """As ``first_run_fails``, but the failure asks for a retry: the outcome
    written is a retry (procrastinate's ``retry_job``), not a finish."""
    _first_run_fails(context, first, later)


@app.task(name="say", pass_context=True)
def say(context: procrastinate.JobContext, text: str = "said") -> None:
    """Prints without a newline: under a block-buffered stdout (a pipe, a
    file) the text waits in the child's buffer until it exits."""
    _mark(context, "start")
    print(text, end="")
    _mark(context, "end")


@app.task(name="noop")
def noop() -> None:
    return None


@app.task(
    name="flaky",
    pass_context=True,
    retry=procrastinate.RetryStrategy(max_attempts=3, wait=0),
)
def flaky(context: procrastinate.JobContext, fail_times: int = 1) -> None:
    _mark(context, "start")
    if context.job.attempts < fail_times:
        raise RuntimeError("flaky failure")
    _mark(context, "end")


@app.task(
    name="slow_retry_on_timeout",
    pass_context=True,
    retry=procrastinate.RetryStrategy(
        max_attempts=2,
        wait=0,
        retry_exceptions={
            __import__(
                "procrastinate_prefork.fleet.recovery", fromlist=["x"]
            ).JobTimeLimitExceeded
        },
    ),
)
def slow_retry_on_timeout(
    context: procrastinate.JobContext, seconds: float = 30
) -> None:
    _mark(context, "start")
    time.sleep(seconds)
    _mark(context, "end")


_hoard: list[bytes] = []


@app.task(name="hog", pass_context=True)
def hog(context: procrastinate.JobContext, mb: int = 50) -> None:
    """Keeps ``mb`` MiB alive in the child, like a leak would."""
    _mark(context, "start")
    _hoard.append(b"x" * (mb * 2**20))
    _mark(context, "end")


def on_child_start(*, slot: int, pid: int) -> None:
    results = os.environ.get("PREFORK_TEST_RESULTS")
    if results:
        with open(os.path.join(results, f"hook-start-{pid}"), "w") as f:
            f.write(f"{slot} {os.getppid()}\n")


def on_child_exit(
    *, slot: int, pid: int, exit_code: int | None, signal: int | None
) -> None:
    results = os.environ.get("PREFORK_TEST_RESULTS")
    if results:
        with open(os.path.join(results, f"hook-exit-{pid}"), "w") as f:
            f.write(f"{slot} {exit_code} {signal} {os.getpid()}\n")


def _soft_stop(context: procrastinate.JobContext, exc: BaseException) -> None:
    """The clean-up of a task stopped by its soft time limit: the phase names
    the exception the task saw."""
    from procrastinate_prefork import SoftTimeLimitExceeded

    _mark(context, "soft" if isinstance(exc, SoftTimeLimitExceeded) else "cancelled")


@app.task(name="soft_loop", pass_context=True)
def soft_loop(context: procrastinate.JobContext, seconds: float = 30) -> None:
    _mark(context, "start")
    try:
        burn(seconds * 1000)
    except BaseException as exc:
        _soft_stop(context, exc)
        raise
    _mark(context, "end")


@app.task(name="soft_async", pass_context=True)
async def soft_async(context: procrastinate.JobContext, seconds: float = 30) -> None:
    _mark(context, "start")
    try:
        await asyncio.sleep(seconds)
    except BaseException as exc:
        _soft_stop(context, exc)
        raise
    _mark(context, "end")


@app.task(
    name="soft_retry",
    pass_context=True,
    retry=procrastinate.RetryStrategy(
        max_attempts=1,
        wait=0,
        retry_exceptions={__import__("procrastinate_prefork").SoftTimeLimitExceeded},
    ),
)
def soft_retry(context: procrastinate.JobContext, seconds: float = 30) -> None:
    _mark(context, "start")
    burn(seconds * 1000)
    _mark(context, "end")


@app.task(name="fails", pass_context=True)
def fails(context: procrastinate.JobContext) -> None:
    _mark(context, "start")
    raise RuntimeError("this task fails\nover two lines")


def crash_after_first_pool(*, slot: int, pid: int) -> None:
    """A child of any pool but the first dies as it starts (a crash loop of
    that pool alone): the first pool's slots are those below 2 * MAX_CHILDREN."""
    from procrastinate_prefork.supervisor.pool import SLOTS_PER_POOL

    if slot >= SLOTS_PER_POOL:
        raise RuntimeError("this pool's children cannot start")


#: how long a slowed empty fetch keeps its answer (seconds)
SLOW_FETCH = 3.0


def slow_empty_fetches(*, slot: int, pid: int) -> None:
    """The child's fetches that find nothing answer late, as on a loaded
    machine: each leaves a file ``empty-fetch-<pid>-<time>`` when the database
    has answered, then holds the answer ``SLOW_FETCH`` seconds. Patched on the
    connector classes, below every wrapper of the job manager."""
    from procrastinate import psycopg_connector

    from procrastinate_prefork.child import session

    results = os.environ["PREFORK_TEST_RESULTS"]
    for cls in (psycopg_connector.PsycopgConnector, session.SessionConnector):
        original = cls.execute_query_one_async

        async def slowed(self, query, *, _original=original, **arguments):
            row = await _original(self, query, **arguments)
            if "procrastinate_fetch_job" in query and row.get("id") is None:
                name = f"empty-fetch-{os.getpid()}-{time.time():.6f}"
                open(os.path.join(results, name), "w").close()
                await asyncio.sleep(SLOW_FETCH)
            return row

        cls.execute_query_one_async = slowed
