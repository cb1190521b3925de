"""A connection attempt that never blocks, for the supervisor's loop.

The only module that uses psycopg internals to connect:
``Connection._connect_gen`` (the generator ``psycopg.connect`` itself drives)
and the protocol of ``psycopg.waiting``: the generator yields ``(fd, Wait)``
and receives ``Ready`` flags.
"""

from __future__ import annotations

import select
import time
from typing import Any

import psycopg
from psycopg.waiting import Ready, Wait

#: seconds before an attempt is given up (libpq's own ``connect_timeout`` is
#: not applied to a non-blocking attempt: this is)
CONNECT_TIMEOUT = 3
#: keyword arguments of ``psycopg.connect`` that are the Connection's, not
#: libpq's (``make_conninfo`` would drop or refuse them)
CONNECTION_OPTIONS = frozenset(
    {"autocommit", "prepare_threshold", "row_factory", "cursor_factory"}
)


class Connecting:
    """The loop's ``select`` watches ``fileno`` (for writing when
    ``wants_write``) and ``advance`` moves the attempt on. Host names are
    resolved by libpq when the attempt starts: that part blocks (an address,
    or a local resolver, keeps a black-holed network from holding it)."""

    def __init__(
        self,
        conninfo: str,
        timeout: float = CONNECT_TIMEOUT,
        options: dict[str, Any] | None = None,
    ):
        self.deadline = time.monotonic() + timeout
        self._options = options or {}  # CONNECTION_OPTIONS, set once connected
        self._gen = psycopg.Connection._connect_gen(conninfo)
        self._done: psycopg.Connection | None = None
        try:
            self.fileno, self._wait = next(self._gen)
        except StopIteration as finished:  # not seen: libpq always waits once
            self._done = finished.value

    @property
    def wants_write(self) -> bool:
        return bool(self._wait & Wait.W)

    def advance(self, wait: float = 0.0) -> psycopg.Connection | None:
        """The connection once established, else None (waiting at most
        ``wait`` s). Raises ``OperationalError`` when the attempt failed or
        ``CONNECT_TIMEOUT`` passed."""
        end = min(self.deadline, time.monotonic() + wait)
        while self._done is None:
            readers = [self.fileno] if self._wait & Wait.R else []
            writers = [self.fileno] if self.wants_write else []
            left = max(0.0, end - time.monotonic())
            r, w, _ = select.select(readers, writers, [], left)
            if not (r or w):
                if time.monotonic() >= self.deadline:
                    self.abandon()
                    raise psycopg.errors.ConnectionTimeout("connection timeout expired")
                return None
            ready = (Ready.R if r else 0) | (Ready.W if w else 0)
            try:
                self.fileno, self._wait = self._gen.send(ready)
            except StopIteration as finished:
                self._done = finished.value
                for name, value in self._options.items():
                    setattr(self._done, name, value)
        return self._done

    def abandon(self) -> None:
        self._gen.close()  # psycopg finishes the half-open PGconn
