"""Signals: the handlers only queue them and write to a self-pipe (the
loop's ``select`` wakes on it); the loop takes them one by one and calls the
``handle_<name>`` method of ``lifecycle.Lifecycle`` (``SIGHUP`` to
``handle_hup``)."""

from __future__ import annotations

import os
import signal
from typing import Any

HANDLED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGCHLD,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    # Their default action would end the supervisor: operators send
    # SIGUSR1 by habit (log rotation), SIGUSR2 or SIGALRM by mistake
    # (db.deadline uses SIGALRM during a database call).
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
)


def handler_name(signum: int) -> str:
    """``SIGHUP`` -> ``handle_hup``."""
    return "handle_" + signal.Signals(signum).name.removeprefix("SIG").lower()


class Signals:
    """The queue of signals received and not handled yet, and the self-pipe."""

    def __init__(self) -> None:
        self.queued: list[int] = []
        self.read_fd: int = -1
        self.write_fd: int = -1

    def install(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        for fd in (self.read_fd, self.write_fd):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        for signum in HANDLED:
            signal.signal(signum, self.queue)

    def queue(self, signum: int, frame: Any) -> None:
        self.queued.append(signum)

    def pop(self) -> int | None:
        """The oldest signal not handled yet; those that arrive meanwhile
        are handled in the same turn."""
        return self.queued.pop(0) if self.queued else None

    def fds(self) -> list[int]:
        return [self.read_fd, self.write_fd]

    def clear_pipe(self, readable: list[int]) -> None:
        if self.read_fd not in readable:
            return
        try:
            while os.read(self.read_fd, 512):
                pass
        except BlockingIOError:
            pass
