"""A job's end: recorded only if the job is still this run's, with the next
fetch in the same statement when the worker fetches at once; and the one
place every end passes (``on_job_ended``)."""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable
from typing import Any

import procrastinate
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate import jobs

from ..fleet import queries
from .outages import is_disconnection

logger = logging.getLogger("procrastinate_prefork.child")

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
            if is_disconnection(exc):
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
