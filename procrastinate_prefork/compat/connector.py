"""procrastinate's psycopg connector and psycopg_pool's pool: what a child
needs to build its own connection from the app's, and a pool that comes back
promptly after an outage."""

from __future__ import annotations

import logging
from typing import Any

import psycopg_pool
from procrastinate import psycopg_connector

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
