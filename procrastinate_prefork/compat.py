"""Everything we touch that is private in procrastinate, in one place.

Supported: procrastinate 3.x (tested against 3.10). If procrastinate changes
one of these, this module is the only one to adapt, and
``tests/unit/test_compat.py`` is the test that says so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import procrastinate
from procrastinate import psycopg_connector
from procrastinate import worker as worker_module


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

    manager.register_worker = register_worker  # type: ignore[method-assign]
