# A part of ``Supervisor``: its methods take ``self: Supervisor`` so that mypy
# checks them against the whole class; mypy reports such self-types of a mixin
# as "erased type of self" (misc), which is what it is meant to be here.
# mypy: disable-error-code="misc"
"""Signals: handlers only queue them; the loop dispatches each one to the
``handle_<name>`` method of the supervisor (``SIGHUP`` to ``handle_hup``)."""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING, Any

import setproctitle

from ..observability import logfiles
from .children import Child, Phase

if TYPE_CHECKING:
    from .arbiter import Supervisor

logger = logging.getLogger("procrastinate_prefork.supervisor")

KILL_MARGIN = 1.0  # after the shared drain deadline, before SIGKILL

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


class SignalHandling:
    """Queueing and handling of signals (a part of ``Supervisor``)."""

    def _install_signals(self: Supervisor) -> None:
        self._sig_r, self._sig_w = os.pipe()
        for fd in (self._sig_r, self._sig_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self._sig_w, warn_on_full_buffer=False)
        for signum in HANDLED:
            signal.signal(signum, self._queue_signal)

    def _queue_signal(self: Supervisor, signum: int, frame: Any) -> None:
        self._signals.append(signum)

    def _handle_signals(self: Supervisor) -> None:
        while self._signals:
            getattr(self, handler_name(self._signals.pop(0)))()

    def handle_chld(self: Supervisor) -> None:
        pass  # the loop reaps on every turn

    def handle_usr1(self: Supervisor) -> None:
        count = logfiles.reopen()
        logger.info(
            "SIGUSR1: %d log file(s) reopened; children asked to do the same",
            count,
            extra={"action": "reopen_logs", "files": count},
        )
        for child in self.children.values():
            self._kill(child, signal.SIGUSR1)

    def _ignore(self: Supervisor, name: str) -> None:
        logger.info(
            "%s: ignored", name, extra={"action": "signal_ignored", "signal": name}
        )

    def handle_usr2(self: Supervisor) -> None:
        self._ignore("SIGUSR2")

    def handle_alrm(self: Supervisor) -> None:
        self._ignore("SIGALRM")

    def handle_ttin(self: Supervisor) -> None:
        if self.phase is Phase.RUNNING:
            self._grow()

    def handle_ttou(self: Supervisor) -> None:
        if self.phase is Phase.RUNNING:
            self._shrink()

    def handle_hup(self: Supervisor) -> None:
        if self.phase is Phase.RUNNING:
            self._rolling_restart()

    def handle_quit(self: Supervisor) -> None:
        self._stop_now("SIGQUIT")

    def handle_term(self: Supervisor) -> None:
        self._stop("SIGTERM")

    def handle_int(self: Supervisor) -> None:
        self._stop("SIGINT")

    def _stop(self: Supervisor, why: str) -> None:
        """A second stop signal during a drain stops at once."""
        if self.phase is Phase.RUNNING:
            self._drain(why)
        else:
            self._stop_now(why)

    def _drain(self: Supervisor, why: str) -> None:
        timeout = self.config.shutdown_graceful_timeout
        self.phase = Phase.DRAINING
        self.deadline = deadline = self.system.monotonic() + timeout
        self.respawn_at.clear()
        logger.info(
            "%s: draining %d child(ren), %g s for running jobs",
            why,
            len(self.children),
            timeout,
            extra={"action": "drain"},
        )
        for child in self.children.values():
            self._kill(child, signal.SIGTERM)
            child.kill = child.kill.schedule(
                deadline + KILL_MARGIN, "shutdown deadline passed"
            )
        setproctitle.setproctitle(self._title())

    def _stop_now(self: Supervisor, why: str) -> None:
        self.phase = Phase.STOPPING
        self.respawn_at.clear()
        logger.warning(
            "%s: stopping now, killing %d child(ren)",
            why,
            len(self.children),
            extra={"action": "stop_now"},
        )
        for child in self.children.values():
            child.kill = child.kill.blame(child.kill.reason or "immediate stop")
            self._kill(child, signal.SIGKILL)

    def _kill(self: Supervisor, child: Child, signum: int) -> None:
        try:
            self.system.kill(child.pid, signum)
        except ProcessLookupError:
            pass
