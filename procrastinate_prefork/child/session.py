"""A child's own database session, for ``--child-concurrency 1``.

One job at a time runs in such a child, on a connection nobody else uses, so
the child talks to the database like a dedicated client: one session in
autocommit, no pool. procrastinate's statements are single calls of its own
SQL functions, each its own transaction without ``BEGIN``/``COMMIT``; nothing
is sent to check the session before a use (a pool sends ``""`` at each
check-out). A session the server ended while it sat idle is found without a
round trip (see ``_ended_while_idle``) and replaced before the next call; one
that breaks during a call fails that call, as a pool's connection would, and
the next call opens a new one: compat's outage code repeats what must be.

Wake-ups come from the supervisor's pipe, as with the pooled connector.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import select
import time
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
import psycopg.rows
import psycopg.types.json
from procrastinate import connector as connector_module
from procrastinate import exceptions, psycopg_connector

from ..supervisor import db
from . import wakepipe

logger = logging.getLogger("procrastinate_prefork.child")


class PipeWake:
    """LISTEN/NOTIFY replaced by the supervisor's pipe: one LISTEN session per
    host instead of one per child, and the supervisor can wake a child after a
    recovery."""

    _wake_fd: int | None = None
    #: "job inserted" wake-ups received so far (``compat.fetches`` compares
    #: it before and after a fetch)
    wakes: int = 0

    async def listen_notify(
        self, on_notification: connector_module.Notify, channels: Iterable[str]
    ) -> None:
        if self._wake_fd is None:
            return
        fd, self._wake_fd = self._wake_fd, None
        async for channel, payload in wakepipe.read_wakes(fd):
            if wakepipe.is_job_inserted(payload):
                self.wakes += 1
            await on_notification(channel=channel, payload=payload)


class PipeWakeConnector(PipeWake, psycopg_connector.PsycopgConnector):
    """procrastinate's pooled psycopg connector, woken by the pipe (a child
    that runs several jobs at once needs a session for each)."""

    def __init__(self, wake_fd: int | None, **kwargs: Any):
        super().__init__(**kwargs)
        self._wake_fd = wake_fd


#: how long a child's first session is tried for (psycopg_pool's open() waits
#: as long for a pool), and the waits between attempts
OPEN_TIMEOUT = 30.0
OPEN_RETRY_MIN, OPEN_RETRY_MAX = 0.5, 2.0


def _jsonb(value: Any) -> Any:
    # as procrastinate's PsycopgConnector sends its arguments: dicts as jsonb
    if isinstance(value, dict):
        return psycopg.types.json.Jsonb(value)
    if isinstance(value, list):
        return [_jsonb(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_jsonb(item) for item in value)
    return value


def _ended_while_idle(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether the server ended this idle session (``pg_terminate_backend``,
    ``idle_session_timeout``, a restart): it then sends an error and closes
    the socket. Nobody LISTENs on this session, so on an idle one nothing else
    is expected; reading the socket's state costs no round trip."""
    if conn.closed or conn.broken:
        return True
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False  # a call of another coroutine is in flight on it
    poller = select.poll()  # not select(): no limit on the descriptor's number
    try:
        poller.register(conn.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class SessionConnector(PipeWake, connector_module.BaseAsyncConnector):
    """procrastinate's connector interface on one dedicated session.

    Takes ``PsycopgConnector``'s arguments (``conninfo``, ``kwargs``,
    ``configure``, ``connection_class``, ``json_dumps``, ``json_loads``);
    arguments only a pool has (sizes, timeouts) are ignored."""

    def __init__(
        self,
        wake_fd: int | None,
        *,
        conninfo: str | Callable[..., Any] = "",
        kwargs: dict[str, Any] | Callable[..., Any] | None = None,
        configure: Callable[..., Any] | None = None,
        connection_class: type[psycopg.AsyncConnection[Any]] | None = None,
        json_dumps: Callable[..., Any] | None = None,
        json_loads: Callable[..., Any] | None = None,
        **pool_only: Any,
    ):
        self._wake_fd = wake_fd
        self._conninfo = conninfo
        self._kwargs = kwargs
        self._configure = configure
        self._connection_class = connection_class or psycopg.AsyncConnection
        self.json_dumps = json_dumps
        self.json_loads = json_loads
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._opened = False
        self._connecting = asyncio.Lock()
        #: sessions opened so far (the first, then one per reconnection)
        self.sessions = 0

    def get_sync_connector(self) -> connector_module.BaseConnector:
        return self

    @psycopg_connector.wrap_exceptions()
    async def open_async(self, pool: Any = None) -> None:
        if pool is not None:
            raise ValueError("a child's dedicated session takes no pool")
        self._opened = True
        # As psycopg_pool's open(wait=True) does for a pooled child: a child
        # forked during an outage waits for the database, within a bound,
        # instead of crashing at once and crash-looping until it is back.
        deadline = time.monotonic() + OPEN_TIMEOUT
        delay = OPEN_RETRY_MIN
        while True:
            try:
                await self._session()
                return
            except psycopg.OperationalError:
                if time.monotonic() + delay > deadline:
                    raise  # connection errors show at start, as with a pool
                await asyncio.sleep(delay)
                delay = min(2 * delay, OPEN_RETRY_MAX)

    async def close_async(self) -> None:
        self._opened = False
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _resolved(self, value: Any) -> Any:
        # psycopg_pool 3.3 takes callables for conninfo and kwargs
        if callable(value):
            value = value()
            if inspect.isawaitable(value):
                value = await value
        return value

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conninfo = await self._resolved(self._conninfo)
        kwargs = dict(await self._resolved(self._kwargs) or {})
        kwargs.setdefault("connect_timeout", db.CONNECT_TIMEOUT)
        kwargs["autocommit"] = True
        conn = await self._connection_class.connect(conninfo, **kwargs)
        if self._configure is not None:
            await self._configure(conn)
        self.sessions += 1
        if self.sessions > 1:
            logger.info(
                "Child database session reopened",
                extra={"action": "session_reopened", "sessions": self.sessions},
            )
        return conn

    async def _session(self) -> psycopg.AsyncConnection[Any]:
        if not self._opened:
            raise exceptions.AppNotOpen
        async with self._connecting:
            conn = self._conn
            if conn is None or _ended_while_idle(conn):
                self._conn = None
                if conn is not None:
                    await conn.close()  # no round trip on a broken one
                self._conn = conn = await self._connect()
            return conn

    async def _run(
        self,
        conn: psycopg.AsyncConnection[Any] | None,
        query: Any,
        arguments: dict[str, Any],
        fetch: str,
    ) -> Any:
        if conn is None:
            conn = await self._session()
        async with conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
            if self.json_dumps is not None:
                psycopg.types.json.set_json_dumps(self.json_dumps, context=cursor)
            if self.json_loads is not None:
                psycopg.types.json.set_json_loads(self.json_loads, context=cursor)
            await cursor.execute(query, {k: _jsonb(v) for k, v in arguments.items()})
            if fetch == "one":
                row = await cursor.fetchone()
                if row is None:
                    raise exceptions.NoResult
                return row
            if fetch == "all":
                return await cursor.fetchall()
            return None

    @psycopg_connector.wrap_exceptions()
    async def execute_query_async(self, query: Any, **arguments: Any) -> None:
        await self._run(None, query, arguments, "none")

    @psycopg_connector.wrap_exceptions()
    async def execute_query_one_async(
        self, query: Any, **arguments: Any
    ) -> dict[str, Any]:
        return await self._run(None, query, arguments, "one")  # type: ignore[no-any-return]

    @psycopg_connector.wrap_exceptions()
    async def execute_query_all_async(
        self, query: Any, **arguments: Any
    ) -> list[dict[str, Any]]:
        return await self._run(None, query, arguments, "all")  # type: ignore[no-any-return]

    @psycopg_connector.wrap_exceptions()
    async def execute_query_one_async_with_connection(
        self, connection: Any, query: Any, **arguments: Any
    ) -> dict[str, Any]:
        return await self._run(connection, query, arguments, "one")  # type: ignore[no-any-return]

    @psycopg_connector.wrap_exceptions()
    async def execute_query_all_async_with_connection(
        self, connection: Any, query: Any, **arguments: Any
    ) -> list[dict[str, Any]]:
        return await self._run(connection, query, arguments, "all")  # type: ignore[no-any-return]
