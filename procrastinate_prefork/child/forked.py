"""From ``fork()`` returning 0 to ``os._exit``: the frame of a child's life.

A child never returns into the supervisor's code: ``child_main`` ends every
path out of it, exceptions included, in ``os._exit``, so that nothing the
parent registered (atexit hooks, finalizers of inherited objects) runs in it
and the supervisor's loop never runs in a child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from .runner import ChildSpec, run_child

logger = logging.getLogger("procrastinate_prefork.child")


def child_main(make_spec: Callable[[], ChildSpec], parent_fd: int) -> NoReturn:
    """All a forked child does, from the moment ``fork()`` returned 0.

    Whatever happens here (an exception while building its spec or closing the
    supervisor's end of its pipe, a crash, a failing log handler, a flush that
    raises ``BrokenPipeError`` or ``ENOSPC``, ``SystemExit``), it ends in
    ``os._exit``: returning into ``fork_child`` would run the supervisor's
    loop in the child, with a stale copy of the fleet."""
    code = 1
    try:
        os.close(parent_fd)
        code = run_child(make_spec())
    except BaseException:
        with contextlib.suppress(BaseException):
            logger.exception("A new child failed before it could start")
    finally:
        exit_now(code)


def exit_now(code: int) -> NoReturn:
    """Flush what can be flushed and end the process with ``code``.

    A flush fails when stdout is a pipe whose reader went away or a file on a
    full disk: the output is lost, not the exit. ``os._exit`` skips what the
    parent registered (atexit hooks, finalizers of inherited objects)."""
    try:
        for handler in list(logging.getLogger().handlers):
            with contextlib.suppress(BaseException):
                handler.flush()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
    finally:
        os._exit(code)
