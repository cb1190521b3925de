"""The supervisor's one database session.

It carries the host's LISTEN, the fleet heartbeats, the sweeps and the
recoveries. The supervisor closes it before every fork (a child must not
inherit a session) and it reopens lazily on next use. When the database is
down, every use fails fast and the next attempt waits a little longer.

Every call is bounded (``Timeouts``): a lock held on a table, a backend that
stopped answering (a failover without reset, a stopped process) or a
black-holed connection cost the single-threaded loop at most a few seconds,
then count as an outage (the session is dropped and reopened later).

Reopening never holds the loop: a connection attempt is driven by the loop's
own ``select`` (``connecting``, the one module that uses psycopg internals),
so while new connections hang (a partition, a proxy that stops forwarding)
the loop keeps reaping and policing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import psycopg
from procrastinate import manager as manager_module
from psycopg import sql

from .. import errors
from ..fleet import queries
from ..observability import redact
from . import connecting

logger = logging.getLogger("procrastinate_prefork.db")

T = TypeVar("T")
CONNECT_TIMEOUT = connecting.CONNECT_TIMEOUT
# Reconnection attempts: one connection per host, cheap even for a large fleet;
# capped like the children's pools (compat.POOL_RECONNECT_MAX_DELAY) so that
# the supervisor (its /ready, recoveries, heartbeats) is back as soon as they are.
RETRY_MIN, RETRY_MAX = 0.5, 2.0
#: longest a caller waits for a connection attempt it starts; a slower one
#: goes on in the loop's later turns, up to CONNECT_TIMEOUT
CONNECT_WAIT = 0.5


class CallTimeout(psycopg.OperationalError):
    """The database did not answer a call within its bound (client side)."""


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Bounds of the supervisor's database calls, in seconds.

    ``statement`` and ``lock`` are the server's ``statement_timeout`` and
    ``lock_timeout``, set with ``SET LOCAL`` in each call's transaction (a
    session ``SET`` would stick to a pooled server connection behind a
    transaction-pooling PgBouncer; startup ``options`` are refused there).
    ``call`` is the loop's own deadline, for what the server cannot time
    itself (a stopped backend, a lost network): a second more than
    ``statement`` so that the server's cleaner error normally comes first.
    TCP keepalives and ``tcp_user_timeout`` make the kernel notice a dead
    peer of an idle session (the LISTEN) or unacknowledged data.
    """

    statement: float
    lock: float
    call: float

    @classmethod
    def for_heartbeat(cls, heartbeat_interval: float) -> Timeouts:
        # A call longer than a heartbeat interval already delays the next
        # heartbeat; 1..10 s keeps the loop responsive whatever the interval.
        # Its lock waits take milliseconds unless something holds a table: a
        # short lock timeout keeps /live answering during such a lock.
        statement = min(max(heartbeat_interval, 1.0), 10.0)
        return cls(
            statement=statement, lock=min(statement / 2, 1.0), call=statement + 1.0
        )

    def connection_params(self) -> dict[str, Any]:
        """libpq parameters (not startup ``options``: PgBouncer accepts these)."""
        return {
            "keepalives": 1,
            "keepalives_idle": math.ceil(self.statement),
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": int(self.call * 1000),
        }


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise ``CallTimeout`` in the block once ``seconds`` have passed.

    A SIGALRM timer, re-fired every half second until the block ends, so
    that a clean-up psycopg attempts after the first interruption (a
    rollback on the dead session) is interrupted too. Main thread only (the
    supervisor's); elsewhere the block runs unbounded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    armed = True

    def expire(signum: int, frame: Any) -> None:
        if armed:
            raise CallTimeout(f"no answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.5)
    try:
        yield
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def bounded(conn: psycopg.Connection, timeouts: Timeouts | None) -> Iterator[None]:
    """One transaction with the server-side timeouts, under the client-side
    deadline. Raises ``CallTimeout`` or psycopg's ``QueryCanceled`` /
    ``LockNotAvailable`` (all ``OperationalError``) when a bound is hit."""
    if timeouts is None:
        yield
        return
    with deadline(timeouts.call), conn.transaction():
        conn.execute(
            queries.get("set_local_timeouts"),
            [f"{int(timeouts.statement * 1000)}ms", f"{int(timeouts.lock * 1000)}ms"],
        )
        yield


def is_timeout(exc: BaseException) -> bool:
    return isinstance(
        exc,
        (CallTimeout, psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable),
    )


def listen_channels(queues: Iterable[str] | None) -> list[str]:
    """procrastinate's notification channels for these queues (all when
    None): what the supervisor's one LISTEN session listens to."""
    return list(manager_module.get_channel_for_queues(queues))


def pool_channels(queue_sets: Iterable[Iterable[str] | None]) -> list[str]:
    """The channels of several pools' queues: each pool's, once each (a pool
    of every queue adds the channel of all queues, the others keep theirs so
    that a notification can be routed to the pools serving its queue)."""
    channels: dict[str, None] = {}
    for queues in queue_sets:
        channels.update(dict.fromkeys(listen_channels(queues)))
    return list(channels)


def application_name(host: str, role: str, pid: int) -> str:
    """``prefork:<host>:<slot or sup>:<pid>``, within PostgreSQL's 63 bytes."""
    tail = f":{role}:{pid}"
    return ("prefork:" + host)[: 63 - len(tail)] + tail


def connect(
    connection_args: dict[str, Any],
    app_name: str,
    timeouts: Timeouts | None = None,
    **extra: Any,
) -> psycopg.Connection:
    kwargs = dict(connection_args.get("kwargs") or {})
    if timeouts is not None:
        kwargs.update(timeouts.connection_params())
    kwargs.update(application_name=app_name, connect_timeout=CONNECT_TIMEOUT, **extra)
    return psycopg.connect(connection_args.get("conninfo", ""), **kwargs)


def connect_nowait(
    connection_args: dict[str, Any], app_name: str, timeouts: Timeouts | None
) -> connecting.Connecting:
    kwargs = dict(connection_args.get("kwargs") or {})
    if timeouts is not None:
        kwargs.update(timeouts.connection_params())
    kwargs.update(application_name=app_name, autocommit=True)
    options = {k: kwargs.pop(k) for k in connecting.CONNECTION_OPTIONS & set(kwargs)}
    return connecting.Connecting(
        psycopg.conninfo.make_conninfo(connection_args.get("conninfo", ""), **kwargs),
        options=options,
    )


#: seconds a LISTEN check waits for its own notification: on a direct
#: connection it arrives within milliseconds; generous for a loaded machine, paid
#: in full only at the start of a pooled fleet
LISTEN_CHECK_TIMEOUT = 3.0


def listen_works(
    connection_args: dict[str, Any],
    app_name: str,
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
    with connect(
        connection_args, app_name, autocommit=True, prepare_threshold=None
    ) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        with connect(
            connection_args, app_name, autocommit=True, prepare_threshold=None
        ) as sender:
            sender.execute(queries.get("notify_empty"), [channel])
        return any(True for _ in listener.notifies(timeout=timeout, stop_after=1))


class SupervisorDB:
    def __init__(
        self,
        connection_args: dict[str, Any],
        app_name: str,
        channels: Iterable[str] = (),
        timeouts: Timeouts | None = None,
    ):
        self.connection_args = connection_args
        self.timeouts = timeouts
        self.app_name = app_name
        self.channels = list(channels)
        self.conn: psycopg.Connection | None = None
        self._connecting: connecting.Connecting | None = None
        self.down_since: float | None = None
        self._next_attempt = 0.0
        self._delay = RETRY_MIN
        #: Called after each (re)connection, e.g. to wake children that may
        #: have missed notifications while the session was closed.
        self.on_connect: Callable[[], None] = lambda: None
        #: Called before each bounded call: a sign of the loop's progress.
        self.on_call: Callable[[], None] = lambda: None

    @property
    def is_up(self) -> bool:
        """Not down, and no connection attempt outlasting ``CONNECT_WAIT``."""
        return self.down_since is None and self._connecting is None

    def fileno(self) -> int | None:
        if self._connecting is not None:
            return self._connecting.fileno
        if self.conn is None or self.conn.closed:
            return None
        return self.conn.fileno()

    def wants_write(self) -> bool:
        """Whether the loop's ``select`` should watch ``fileno`` for writing."""
        return self._connecting is not None and self._connecting.wants_write

    def close(self) -> None:
        if self._connecting is not None:
            self._connecting.abandon()
            self._connecting = None
        if self.conn is not None:
            # already broken: nothing to tell the server
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None

    def ensure(self) -> psycopg.Connection | None:
        """The session, or None while it is down or still connecting. While
        the database is up (the session closed for a fork), the first call of
        an attempt waits ``CONNECT_WAIT`` at most; otherwise a call only looks
        (the loop's ``select`` wakes it when the socket is ready): during an
        outage, attempts cost the loop nothing."""
        if self.conn is not None and not self.conn.closed:
            return self.conn
        now = time.monotonic()
        wait = 0.0
        try:
            if self._connecting is None:
                if now < self._next_attempt:
                    return None
                self._connecting = connect_nowait(
                    self.connection_args, self.app_name, self.timeouts
                )
                wait = CONNECT_WAIT if self.down_since is None else 0.0
            conn = self._connecting.advance(wait)
        except psycopg.Error as exc:
            self._connecting = None
            self._failed(exc)
            return None
        if conn is None:
            return None
        self._connecting = None
        try:
            self.on_call()
            with bounded(conn, self.timeouts):
                for channel in self.channels:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except psycopg.Error as exc:
            self.conn = conn  # closed by _failed
            self._failed(exc)
            return None
        if self.down_since is not None:
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
        if is_timeout(exc):
            # Logged each time: a lock or a hung backend is worth knowing about
            # even while the outage it starts is already known.
            logger.error(
                "Database call timed out (%s); dropping the session",
                errors.one_line(exc),
                extra={"action": "db_timeout"},
            )
        if self.down_since is None:
            self.down_since = now
            logger.error(
                "Database unreachable: %s",
                redact.without_secrets(errors.one_line(exc), self.connection_args),
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
            self.on_call()
            with bounded(conn, self.timeouts):
                return work(conn)
        except psycopg.OperationalError as exc:
            self._failed(exc)
            return None
        except psycopg.Error as exc:
            # e.g. a table dropped under us: say so, keep supervising
            logger.error(
                "Database error: %s", errors.one_line(exc), extra={"action": "db_error"}
            )
            return None

    def notifications(self) -> list[tuple[str, str]]:
        """Notifications received so far, without blocking. Called on every
        turn of the loop: it also starts and moves on connection attempts, so
        that the session is back within ``RETRY_MAX`` of the database, not at
        the next call that needs it."""
        if self.conn is None or self.conn.closed:
            self.ensure()
        if self.conn is None or self.conn.closed or not self.channels:
            return []
        try:
            return [(n.channel, n.payload) for n in self.conn.notifies(timeout=0)]
        except psycopg.OperationalError as exc:
            self._failed(exc)
            return []
