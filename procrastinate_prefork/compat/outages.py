"""A child's worker through a database outage or a row deleted under it:
outer wrappers of the job manager that repeat, skip or restore instead of
crashing or dropping an outcome."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import procrastinate
import psycopg
from procrastinate import exceptions as procrastinate_exceptions

from ..fleet import queries

logger = logging.getLogger("procrastinate_prefork.child")

#: seconds between two attempts to record a job's outcome while the database
#: is unreachable
PERSIST_RETRY_DELAY = 1.0


def is_disconnection(exc: BaseException) -> bool:
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
                    if not is_disconnection(exc):
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
                if not is_disconnection(exc):
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


async def _still_ours(manager: Any, job: Any) -> bool:
    row = await manager.connector.execute_query_one_async(
        queries.get("job_still_owned"),
        job_id=job.id,
        attempts=job.attempts,
        worker_id=job.worker_id,
    )
    return bool(row["n"])


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
