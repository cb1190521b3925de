"""procrastinate's Worker: built the way ``App.run_worker_async`` builds it,
and told when it registers and when it fetches."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import procrastinate
from procrastinate import worker as worker_module

logger = logging.getLogger("procrastinate_prefork.child")


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
