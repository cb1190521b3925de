"""Jobs a child fetched that nobody would find, and wake-ups that came while
a fetch ran (procrastinate's ``JobManager`` methods replaced).

A child records its worker id in its own fleet-table row as soon as its
worker registers, before its first fetch (``record_worker_before_fetching``):
the supervisor writes it at its next heartbeat, but if the supervisor is
killed before that, its successor and the sweep would not know that worker
is one of ours, and would judge it as a stock worker (``--stock-worker-timeout``).

The rest is about fetches whose reply was lost.

A fetch is an update that commits on the server. If the connection breaks
after the commit and before the reply reaches the child (a PostgreSQL
restart, a terminated session, a cut network path), the job is ``doing``
under the child's worker while the child, which got an error, never runs it.
The child lives and its supervisor keeps its worker row fresh, so no recovery
takes the job either: it would stay ``doing`` until the child dies, and a job
of its ``lock`` could not run meanwhile. The same holds for the fetch made
with a job's end (``ends.finish_only_owned_jobs``).

So after such a call failed on a lost connection, the worker's next fetch,
once it has its job (or none), gives back to ``todo`` the jobs the database
has ``doing`` under its worker that it does not hold (fetched and not yet
ended), until that succeeds once (``lost_fetch_released``)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import procrastinate
from procrastinate import exceptions as procrastinate_exceptions

from ..fleet import queries
from .outages import is_disconnection

logger = logging.getLogger("procrastinate_prefork.child")


@dataclasses.dataclass
class LostFetches:
    #: a fetch may have committed without its reply since the last release
    uncertain: bool = False
    #: jobs the worker got from a fetch and has not ended yet
    held: set[int] = dataclasses.field(default_factory=set)


def give_back_lost_fetches(app: procrastinate.App) -> LostFetches:
    """Install after ``ends.finish_only_owned_jobs`` and before
    ``outages.survive_database_outages`` (whose repeats of an end and whose
    skipped fetches pass through here each time)."""
    manager = app.job_manager
    state = LostFetches()
    fetch = manager.fetch_job

    async def fetch_one(queues: Any, worker_id: int) -> Any:
        try:
            job = await fetch(queues, worker_id)
        except procrastinate_exceptions.ConnectorException as exc:
            if is_disconnection(exc):
                state.uncertain = True
            raise
        if job is not None and job.id is not None:
            state.held.add(job.id)
        return job

    async def fetch_job(queues: Any, worker_id: int) -> Any:
        job = await fetch_one(queues, worker_id)
        if state.uncertain and await _release(manager, state, worker_id) and not job:
            # what it gave back is this worker's to run too: no wake-up needed
            job = await fetch_one(queues, worker_id)
        return job

    def ending(
        original: Callable[..., Awaitable[None]],
    ) -> Callable[..., Coroutine[Any, Any, None]]:
        async def end(job: Any, *args: Any, **kwargs: Any) -> None:
            try:
                await original(job, *args, **kwargs)
            except procrastinate_exceptions.ConnectorException as exc:
                if is_disconnection(exc):  # its fetch may have committed
                    state.uncertain = True
                raise
            state.held.discard(job.id)

        return end

    # ignore: we replace methods of this app's JobManager on purpose
    manager.fetch_job = fetch_job  # type: ignore[method-assign]
    manager.finish_job = ending(manager.finish_job)  # type: ignore[method-assign]
    manager.retry_job = ending(manager.retry_job)  # type: ignore[method-assign]
    return state


async def _release(manager: Any, state: LostFetches, worker_id: int) -> int:
    """How many jobs went back to ``todo``. Never raises: the job just
    fetched must reach the worker; a failed release is tried again at the
    next fetch."""
    try:
        rows = await manager.connector.execute_query_all_async(
            queries.get("release_lost_fetches"),
            worker_id=worker_id,
            held=sorted(state.held),
        )
    except procrastinate_exceptions.ConnectorException as exc:
        logger.warning(
            "Jobs possibly fetched without a reply not given back yet: %s",
            exc.__cause__ or exc,
            extra={"action": "lost_fetch_release_failed"},
        )
        return 0
    state.uncertain = False
    for row in rows:
        if row["failed"]:
            logger.error(
                "Job %s was fetched without a reply and a job of its queueing lock "
                "waits: failed, the waiting one does the work",
                row["id"],
                extra={"action": "lost_fetch_conflict", "job_id": row["id"]},
            )
        else:
            logger.warning(
                "Job %s was fetched without a reply (connection lost): back to todo",
                row["id"],
                extra={"action": "lost_fetch_released", "job_id": row["id"]},
            )
    return sum(1 for row in rows if not row["failed"])


def fetch_when_needed(
    app: procrastinate.App,
    wakes: Callable[[], int],
    supervisor_polls: Callable[[], bool],
) -> None:
    """Fetch when a job may be waiting, and then until the answer is sure.

    * **A timer's fetch is skipped while the supervisor polls.** The
      supervisor polls the host's runnable jobs once an interval
      (``supervisor/poller.py``) and wakes idle children through their pipes;
      the worker's own timer would add one fetch per child an interval, each
      walking other queues' waiting jobs on big tables. A fetch with no
      wake-up since the last one found nothing can only be the timer's: it
      finds nothing without asking while ``supervisor_polls()`` (its polls on
      time); when they are late (the supervisor stopped, its session down),
      the child polls on its own again.
    * **A wake-up that came during a fetch that found nothing fetches
      again.** procrastinate's worker clears its "new job" event after each
      fetch: a notification that arrives while a fetch runs, of a job
      committed too late for it to see, would be forgotten until the next
      poll. A slow fetch (a loaded machine, a CPU-bound job in a thread of
      the same child) widens that window.

    ``wakes()`` counts the wake-ups received (``child.session.PipeWake``).
    Install last: the outermost wrapper of ``fetch_job``, so that every wait
    of a fetch is inside."""
    manager = app.job_manager
    fetch = manager.fetch_job
    #: the wake-ups counted when the last fetch found nothing (None: it found
    #: a job, or none was made yet)
    idle_since: list[int | None] = [None]

    async def fetch_job(queues: Any, worker_id: int) -> Any:
        if idle_since[0] == wakes() and supervisor_polls():
            return None
        while True:
            seen = wakes()
            job = await fetch(queues, worker_id)
            # each round answers wake-ups that came while the last one ran:
            # as many rounds as notifications, as procrastinate would do
            if job is not None or wakes() == seen:
                idle_since[0] = None if job is not None else seen
                return job

    # ignore: we replace methods of this app's JobManager on purpose
    manager.fetch_job = fetch_job  # type: ignore[method-assign]


def record_worker_before_fetching(
    app: procrastinate.App, *, host: str, supervisor_row: int, slot: int
) -> None:
    """Write the worker id in the child's fleet-table row once the worker
    registers. A failure (the database unreachable) is logged and the worker
    goes on: its supervisor writes the id at its next heartbeat."""
    manager = app.job_manager
    register = manager.register_worker

    async def register_worker() -> int:
        worker_id = await register()
        try:
            await manager.connector.execute_query_async(
                queries.get("record_child_worker"),
                host=host,
                pid=os.getpid(),
                supervisor_id=supervisor_row,
                slot=slot,
                worker_id=worker_id,
            )
        except procrastinate_exceptions.ConnectorException as exc:
            logger.warning(
                "Worker id %s not written to the fleet table by the child: %s",
                worker_id,
                exc.__cause__ or exc,
                extra={"action": "worker_record_failed", "worker_id": worker_id},
            )
        return worker_id

    # ignore: we replace methods of this app's JobManager on purpose
    manager.register_worker = register_worker  # type: ignore[method-assign]
