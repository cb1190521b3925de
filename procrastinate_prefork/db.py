"""The supervisor's one database session.

It carries the host's LISTEN, the fleet heartbeats, the sweeps and the
recoveries. The supervisor closes it before every fork (a child must not
inherit a session) and it reopens lazily on next use. When the database is
down, every use fails fast and the next attempt waits a little longer.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import psycopg
from psycopg import sql

logger = logging.getLogger("procrastinate_prefork.db")

T = TypeVar("T")
CONNECT_TIMEOUT = 3
# Reconnection attempts: one connection per host, cheap even for a large fleet;
# capped like the children's pools (compat.POOL_RECONNECT_MAX_DELAY) so that
# the supervisor (its /ready, recoveries, heartbeats) is back as soon as they are.
RETRY_MIN, RETRY_MAX = 0.5, 2.0


def application_name(host: str, role: str, pid: int) -> str:
    """``prefork:<host>:<slot or sup>:<pid>``, within PostgreSQL's 63 bytes."""
    tail = f":{role}:{pid}"
    return ("prefork:" + host)[: 63 - len(tail)] + tail


def connect(connection_args: dict[str, Any], app_name: str, **extra: Any) -> psycopg.Connection:
    kwargs = dict(connection_args.get("kwargs") or {})
    kwargs.update(application_name=app_name, connect_timeout=CONNECT_TIMEOUT, **extra)
    return psycopg.connect(connection_args.get("conninfo", ""), **kwargs)


#: seconds a LISTEN check waits for its own notification: on a direct
#: connection it arrives within milliseconds; generous for a loaded machine, paid
#: in full only at the start of a pooled fleet
LISTEN_CHECK_TIMEOUT = 3.0


def listen_works(
    connection_args: dict[str, Any], app_name: str,
    timeout: float = LISTEN_CHECK_TIMEOUT,
) -> bool:
    """Whether a LISTEN on these connections receives notifications.

    Behind a transaction pooler (PgBouncer in ``pool_mode = transaction``) a
    client holds a server session only during a transaction: the LISTEN lands
    on whichever session the pool lends for that one statement, and a
    notification reaches that session, never this client. A second connection
    sends the NOTIFY while the listening one sits idle, as the supervisor's
    does: a pooled idle client has no server session, so nothing arrives.
    Checking the behaviour, not the product, covers every pooler."""
    channel = f"procrastinate_prefork_check_{os.getpid()}_{time.monotonic_ns()}"
    # prepare_threshold=None: nothing is repeated here, but stay pooler-safe
    with connect(connection_args, app_name, autocommit=True,
                 prepare_threshold=None) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        with connect(connection_args, app_name, autocommit=True,
                     prepare_threshold=None) as sender:
            sender.execute("SELECT pg_notify(%s, '')", [channel])
        return any(True for _ in listener.notifies(timeout=timeout, stop_after=1))


class SupervisorDB:
    def __init__(
        self,
        connection_args: dict[str, Any],
        app_name: str,
        channels: Iterable[str] = (),
    ):
        self.connection_args = connection_args
        self.app_name = app_name
        self.channels = list(channels)
        self.conn: psycopg.Connection | None = None
        self.down_since: float | None = None
        #: when the session came back after the last outage (monotonic)
        self.back_since: float | None = None
        self._next_attempt = 0.0
        self._delay = RETRY_MIN
        #: Called after each (re)connection, e.g. to wake children that may
        #: have missed notifications while the session was closed.
        self.on_connect: Callable[[], None] = lambda: None

    @property
    def is_up(self) -> bool:
        return self.down_since is None

    def fileno(self) -> int | None:
        if self.conn is None or self.conn.closed:
            return None
        return self.conn.fileno()

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # already broken: nothing to tell the server
                pass
            self.conn = None

    def ensure(self) -> psycopg.Connection | None:
        if self.conn is not None and not self.conn.closed:
            return self.conn
        now = time.monotonic()
        if now < self._next_attempt:
            return None
        try:
            conn = connect(self.connection_args, self.app_name, autocommit=True)
            for channel in self.channels:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except psycopg.Error as exc:
            self._failed(exc)
            return None
        if self.down_since is not None:
            self.back_since = now
            logger.warning(
                "Database reachable again after %.1f s",
                now - self.down_since,
                extra={"action": "db_reconnected"},
            )
        self.conn, self.down_since, self._delay = conn, None, RETRY_MIN
        self.on_connect()
        return conn

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            logger.error(
                "Database unreachable: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                extra={"action": "db_unreachable"},
            )
        self.close()
        self._next_attempt = now + self._delay
        self._delay = min(RETRY_MAX, self._delay * 2)

    def run(self, work: Callable[[psycopg.Connection], T]) -> T | None:
        """Run ``work(conn)``; on a connection failure, note the outage and
        return None (the caller tries again at its next tick)."""
        conn = self.ensure()
        if conn is None:
            return None
        try:
            return work(conn)
        except psycopg.OperationalError as exc:
            self._failed(exc)
            return None
        except psycopg.Error as exc:
            # e.g. a table dropped under us: say so, keep supervising
            logger.error("Database error: %s", (str(exc).strip().splitlines() or [""])[0],
                         extra={"action": "db_error"})
            return None

    def notifications(self) -> list[tuple[str, str]]:
        """Notifications received so far, without blocking."""
        if self.conn is None or self.conn.closed or not self.channels:
            return []
        try:
            return [(n.channel, n.payload) for n in self.conn.notifies(timeout=0)]
        except psycopg.OperationalError as exc:
            self._failed(exc)
            return []
