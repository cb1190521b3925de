"""Everything we touch that is private in procrastinate, in one place.

Supported: procrastinate 3.9 and later 3.x (3.9 added ``worker_middleware``,
which the child uses to report its current job); tested against 3.9 and 3.10.
If procrastinate changes one of these, this module (and ``compat_worker``, the
Worker's own) is the only one to adapt; ``tests/unit/test_compat.py`` says so.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import procrastinate
import psycopg
import psycopg_pool
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate import jobs, psycopg_connector
from procrastinate import worker as worker_module

from .fleet import queries

logger = logging.getLogger("procrastinate_prefork.child")


def psycopg_pool_args(connector: Any) -> dict[str, Any]:
    """The arguments a ``PsycopgConnector`` was built with (conninfo, kwargs,
    pool sizes...), so that a child can build its own with the same target."""
    if not isinstance(connector, psycopg_connector.PsycopgConnector):
        raise TypeError(
            f"the app's connector is a {type(connector).__name__}; "
            "procrastinate-prefork needs a PsycopgConnector"
        )
    args = dict(connector._pool_args)  # pyright: ignore[reportPrivateUsage]
    json_dumps = connector._json_dumps  # pyright: ignore[reportPrivateUsage]
    json_loads = connector._json_loads  # pyright: ignore[reportPrivateUsage]
    if json_dumps is not None:
        args["json_dumps"] = json_dumps
    if json_loads is not None:
        args["json_loads"] = json_loads
    return args


def make_worker(app: procrastinate.App, **options: Any) -> worker_module.Worker:
    """What ``App.run_worker_async`` does before ``worker.run()``: import the
    task modules and build a Worker with ``app.worker_defaults`` merged in.
    We need the Worker object itself to stop it from our signal handlers."""
    app.perform_import_paths()
    return app._worker(**options)  # pyright: ignore[reportPrivateUsage]


def on_worker_registered(
    app: procrastinate.App, callback: Callable[[int], None]
) -> None:
    """Call ``callback(worker_id)`` as soon as the worker has registered, before
    it can fetch a job: the supervisor must know which worker id to recover."""
    manager = app.job_manager
    original: Callable[[], Awaitable[int]] = manager.register_worker

    async def register_worker() -> int:
        worker_id = await original()
        callback(worker_id)
        return worker_id

    # ignore: we replace methods of this app's JobManager on purpose
    manager.register_worker = register_worker  # type: ignore[method-assign]


#: end_owned_job_and_fetch's parameters of the end it does not make
_NO_END_PARAMS = dict.fromkeys(
    ("status", "delete_job", "retry_at", "new_priority", "new_queue_name", "new_lock")
)


def finish_only_owned_jobs(
    app: procrastinate.App,
    fetch_next: Callable[[], tuple[Any, int] | None] | None = None,
) -> None:
    """Record a job's outcome only if the job is still this run's.

    procrastinate's ``finish_job``/``retry_job`` update the job whatever
    happened meanwhile: if the job was recovered and runs again (or ran
    again and ended), a late first run would overwrite the later run's
    outcome. Here the outcome of a run that no longer owns its job is dropped,
    with a log line. Same SQL functions as procrastinate's, behind a check.

    With ``fetch_next`` (a worker that fetches as soon as a job ends), the same
    statement fetches the next job, with procrastinate's function, for the
    worker's next ``fetch_job``: one round trip per job instead of two.
    ``fetch_next()``: the worker's (queues, worker id), None if it will not."""
    manager = app.job_manager
    fetch = manager.fetch_job
    unregister = manager.unregister_worker
    fetched: list[jobs.Job] = []  # at most one: fetched with the last end

    async def write(query: str, job: Any, **params: Any) -> None:
        params.update(job_id=job.id, attempts=job.attempts, worker_id=job.worker_id)
        where = fetch_next() if fetch_next is not None else None
        if where is None:
            rows = await manager.connector.execute_query_all_async(query, **params)
            recorded = bool(rows)
        else:
            recorded = await write_and_fetch(query, job, where, params)
        if not recorded:
            logger.warning(
                "Job %s is no longer this run's (recovered meanwhile): its outcome "
                "is not recorded",
                job.id,
                extra={"action": "outcome_dropped", "job_id": job.id},
            )

    async def write_and_fetch(
        query: str, job: Any, where: tuple[Any, int], params: dict[str, Any]
    ) -> bool:
        queues, fetcher_id = where
        try:
            row = await manager.connector.execute_query_one_async(
                queries.get("end_owned_job_and_fetch"),
                **{**_NO_END_PARAMS, **params},
                retry="retry_at" in params,  # only retry_owned_job's have it
                queues=list(queues) if queues is not None else None,
                fetcher_id=fetcher_id,
            )
        except procrastinate_exceptions.ConnectorException as exc:
            if _is_disconnection(exc):
                raise  # committed or not: survive_database_outages decides
            # all rolled back: the end alone, then the worker's own fetch
            logger.warning(
                "Ending job %s and fetching the next in one statement failed "
                "(%s): its end is recorded alone",
                job.id,
                exc.__cause__ or exc,
                extra={"action": "finish_fetch_failed", "job_id": job.id},
            )
            rows = await manager.connector.execute_query_all_async(query, **params)
            return bool(rows)
        if row["id"] is not None:
            fetched.append(jobs.Job.from_row(row))
        return bool(row["recorded"])

    async def finish_job(job: Any, status: Any, delete_job: bool) -> None:
        await write(
            queries.get("finish_owned_job"),
            job,
            status=status.value,
            delete_job=delete_job,
        )

    async def retry_job(
        job: Any,
        retry_at: Any = None,
        priority: Any = None,
        queue: Any = None,
        lock: Any = None,
    ) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        await write(
            queries.get("retry_owned_job"),
            job,
            retry_at=retry_at or now,
            new_priority=priority,
            new_queue_name=queue,
            new_lock=lock,
        )

    async def fetch_job(queues: Any, worker_id: int) -> Any:
        if fetched:
            return fetched.pop()
        return await fetch(queues, worker_id)

    async def unregister_worker(worker_id: int) -> None:
        # stopped after an end that fetched a job: give back the unstarted job
        while fetched:
            job = fetched.pop()
            try:
                await manager.connector.execute_query_async(
                    queries.get("release_fetched_job"),
                    job_id=job.id,
                    worker_id=worker_id,
                    attempts=job.attempts,
                    payload=json.dumps({"type": "job_inserted", "job_id": job.id}),
                )
            except procrastinate_exceptions.ConnectorException as exc:
                # still doing under this worker: recovered as the dead child's
                logger.warning(
                    "Job %s fetched but not started, not given back: %s",
                    job.id,
                    exc.__cause__,
                    extra={"action": "fetched_job_kept", "job_id": job.id},
                )
                continue
            logger.info(
                "Job %s fetched but not started: back to todo",
                job.id,
                extra={"action": "fetched_job_released", "job_id": job.id},
            )
        await unregister(worker_id)

    # ignore: we replace methods of this app's JobManager on purpose
    manager.finish_job = finish_job  # type: ignore[method-assign]
    manager.retry_job = retry_job  # type: ignore[method-assign]
    manager.fetch_job = fetch_job  # type: ignore[method-assign]
    manager.unregister_worker = unregister_worker  # type: ignore[method-assign]


def on_job_ended(app: procrastinate.App, callback: Callable[[Any, str], None]) -> None:
    """Call ``callback(job, outcome)`` each time the worker records a job's
    end, before writing it: ``outcome`` is the status written (``succeeded``,
    ``failed``, ``aborted``) or ``retried``. This is the one place every
    fetched job passes, those procrastinate fails before any middleware runs
    (a task the app does not know) too. Wrap this after the other wrappers
    of ``finish_job``/``retry_job``: a write repeated through a database
    outage is still one call here."""
    manager = app.job_manager
    finish = manager.finish_job
    retry = manager.retry_job

    async def finish_job(job: Any, status: Any, delete_job: bool) -> None:
        callback(job, str(status.value))
        await finish(job=job, status=status, delete_job=delete_job)

    async def retry_job(job: Any, *args: Any, **kwargs: Any) -> None:
        callback(job, "retried")
        await retry(job, *args, **kwargs)

    # ignore: we replace methods of this app's JobManager on purpose
    manager.finish_job = finish_job  # type: ignore[method-assign]
    manager.retry_job = retry_job  # type: ignore[method-assign]


def restore_deleted_worker_row(app: procrastinate.App) -> None:
    """A fetch that fails because this worker's row was deleted under it (a
    stock worker's start-up prune, a manual clean-up) puts the row back and
    fetches again, instead of crashing the child on the foreign key."""
    manager = app.job_manager
    original = manager.fetch_job

    async def fetch_job(queues: Any, worker_id: int) -> Any:
        try:
            return await original(queues, worker_id)
        except procrastinate_exceptions.ConnectorException as exc:
            if not isinstance(exc.__cause__, psycopg.errors.ForeignKeyViolation):
                raise
        logger.warning(
            "Worker row %s was deleted under a live child: restored",
            worker_id,
            extra={"action": "worker_row_restored", "worker_id": worker_id},
        )
        await manager.connector.execute_query_async(
            "INSERT INTO procrastinate_workers (id) OVERRIDING SYSTEM VALUE "
            "VALUES (%(worker_id)s) ON CONFLICT (id) DO NOTHING",
            worker_id=worker_id,
        )
        return await original(queues, worker_id)

    # ignore: we replace methods of this app's JobManager on purpose
    manager.fetch_job = fetch_job  # type: ignore[method-assign]


#: longest wait between two attempts of a child's pool to reconnect
POOL_RECONNECT_MAX_DELAY = 2.0


class PromptReconnectPool(psycopg_pool.AsyncConnectionPool):
    """psycopg_pool's pool, except that it retries a lost connection at least
    every ``POOL_RECONNECT_MAX_DELAY`` seconds.

    psycopg_pool doubles the delay after each failed attempt, without a cap
    short of ``reconnect_timeout`` (5 min): after a 30 s database outage a
    child would wait up to 30 s more before its next attempt, its jobs' ends
    unrecorded and the pool's waiters timing out meanwhile. Relies on the
    private ``_add_connection(attempt, growing)`` of psycopg_pool 3.x."""

    async def _add_connection(self, attempt: Any, growing: bool = False) -> None:
        if attempt is not None:  # a retry: update_delay() doubles it next
            attempt.delay = min(
                attempt.delay, POOL_RECONNECT_MAX_DELAY / attempt.DELAY_BACKOFF
            )
        await super()._add_connection(attempt, growing=growing)


#: seconds between two attempts to record a job's outcome while the database
#: is unreachable
PERSIST_RETRY_DELAY = 1.0


def _is_disconnection(exc: BaseException) -> bool:
    return isinstance(exc.__cause__, psycopg.OperationalError)


def survive_database_outages(app: procrastinate.App, *, keep_fetching: bool) -> None:
    """Let a child's worker ride out a database outage instead of crashing
    or, worse, dropping a job's outcome.

    procrastinate's worker, when the connection is lost (psycopg_pool gives up
    after its 30 s timeout): crashes when fetching, stops when its heartbeat
    fails, and logs and forgets a failed ``finish_job``/``retry_job``: that
    job stays ``doing`` under a worker that is alive and heartbeating, so no
    recovery ever picks it up. Here, on a lost connection only:

    * ``finish_job``/``retry_job`` are repeated until the database answers.
      Before each repeat the job must still be ``doing`` under this worker:
      if the first call was committed before the connection broke, or a
      sweeper recovered the job meanwhile, the outcome is not recorded twice;
    * a failed heartbeat is skipped (the supervisor refreshes the worker rows);
    * with ``keep_fetching`` (not in one-shot mode, where "no job" ends the
      worker), a failed fetch finds no job: the worker tries again at its next
      poll or wake-up."""
    manager = app.job_manager

    def persisting(
        original: Callable[..., Awaitable[None]],
    ) -> Callable[..., Coroutine[Any, Any, None]]:
        async def persist(job: Any, *args: Any, **kwargs: Any) -> None:
            failures = 0
            while True:
                try:
                    if failures and not await _still_ours(manager, job):
                        logger.warning(
                            "Job %s is no longer ours after a database outage: "
                            "its outcome is not recorded",
                            job.id,
                            extra={"action": "persist_skipped", "job_id": job.id},
                        )
                        return None
                    return await original(job, *args, **kwargs)
                except procrastinate_exceptions.ConnectorException as exc:
                    if not _is_disconnection(exc):
                        raise
                    failures += 1
                    if failures == 1:
                        logger.warning(
                            "Database unreachable: the outcome of job %s will be "
                            "recorded when it answers",
                            job.id,
                            extra={"action": "persist_retry", "job_id": job.id},
                        )
                    await asyncio.sleep(PERSIST_RETRY_DELAY)

        return persist

    def tolerant(
        original: Callable[..., Awaitable[Any]], name: str
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await original(*args, **kwargs)
            except procrastinate_exceptions.ConnectorException as exc:
                if not _is_disconnection(exc):
                    raise
                logger.warning(
                    "Database unreachable: %s skipped",
                    name,
                    extra={"action": "db_call_skipped", "call": name},
                )
                return None

        return call

    # ignore: we replace methods of this app's JobManager on purpose
    manager.finish_job = persisting(manager.finish_job)  # type: ignore[method-assign]
    manager.retry_job = persisting(manager.retry_job)  # type: ignore[method-assign]
    manager.update_heartbeat = tolerant(  # type: ignore[method-assign]
        manager.update_heartbeat, "heartbeat"
    )
    if keep_fetching:
        manager.fetch_job = tolerant(  # type: ignore[method-assign]
            manager.fetch_job, "fetch"
        )


def on_fetch(app: procrastinate.App, callback: Callable[[bool], None]) -> None:
    """Call ``callback(found)`` after each fetch of the app's worker: whether
    it got a job. A one-shot worker (``wait=False``) stops after a fetch that
    finds none, but ``Worker.run`` returns the same way after a ``stop()``:
    only the fetch tells the two apart."""
    manager = app.job_manager
    fetch = manager.fetch_job

    async def watched(*args: Any, **kwargs: Any) -> Any:
        job = await fetch(*args, **kwargs)
        callback(job is not None)
        return job

    manager.fetch_job = watched  # type: ignore[method-assign]


async def _still_ours(manager: Any, job: Any) -> bool:
    row = await manager.connector.execute_query_one_async(
        queries.get("job_still_owned"),
        job_id=job.id,
        attempts=job.attempts,
        worker_id=job.worker_id,
    )
    return bool(row["n"])
