"""The supervisor's phase (running, draining, stopping) with its drain
deadline, and what each signal means: the loop calls ``handle_<signal>``.

It owns the phase and the deadline; it is given the pool it acts on and
the clock. Stopping and draining reach the children through the pool."""

from __future__ import annotations

import logging
import signal

import setproctitle

from ..config import PreforkConfig
from ..observability import logfiles
from .children import Phase
from .pool import Pool
from .system import System

logger = logging.getLogger("procrastinate_prefork.supervisor")


class Lifecycle:
    def __init__(self, config: PreforkConfig, system: System, pool: Pool):
        self.config = config
        self.system = system
        self.pool = pool
        self.phase: Phase = Phase.RUNNING
        self.deadline: float | None = None  # of the drain
        self.title = ""

    def retitle(self) -> None:
        """The process title: phase, size, queues."""
        config = self.config
        queues = ",".join(config.queues) if config.queues else "all queues"
        title = (
            f"procrastinate-prefork supervisor [{self.phase.value}] "
            f"{self.pool.target} children, {queues} ({config.hostname})"
        )
        if title != self.title:
            setproctitle.setproctitle(title)
            self.title = title

    @property
    def running(self) -> bool:
        return self.phase is Phase.RUNNING

    def handle_chld(self) -> None:
        pass  # the loop reaps on every turn

    def handle_usr1(self) -> None:
        count = logfiles.reopen()
        logger.info(
            "SIGUSR1: %d log file(s) reopened; children asked to do the same",
            count,
            extra={"action": "reopen_logs", "files": count},
        )
        self.pool.signal_all(signal.SIGUSR1)

    def _ignore(self, name: str) -> None:
        logger.info(
            "%s: ignored", name, extra={"action": "signal_ignored", "signal": name}
        )

    def handle_usr2(self) -> None:
        self._ignore("SIGUSR2")

    def handle_alrm(self) -> None:
        self._ignore("SIGALRM")

    def handle_ttin(self) -> None:
        if self.running:
            self.pool.grow()

    def handle_ttou(self) -> None:
        if self.running:
            self.pool.shrink()

    def handle_hup(self) -> None:
        if self.running:
            self.pool.rolling_restart()

    def handle_quit(self) -> None:
        self.stop_now("SIGQUIT")

    def handle_term(self) -> None:
        self.stop("SIGTERM")

    def handle_int(self) -> None:
        self.stop("SIGINT")

    def stop(self, why: str) -> None:
        """A second stop signal during a drain stops at once."""
        if self.running:
            self.drain(why)
        else:
            self.stop_now(why)

    def drain(self, why: str) -> None:
        timeout = self.config.shutdown_graceful_timeout
        self.phase = Phase.DRAINING
        self.deadline = deadline = self.system.monotonic() + timeout
        logger.info(
            "%s: draining %d child(ren), %g s for running jobs",
            why,
            len(self.pool.children),
            timeout,
            extra={"action": "drain"},
        )
        self.pool.drain(deadline)

    def stop_now(self, why: str) -> None:
        self.phase = Phase.STOPPING
        logger.warning(
            "%s: stopping now, killing %d child(ren)",
            why,
            len(self.pool.children),
            extra={"action": "stop_now"},
        )
        self.pool.stop_now()
