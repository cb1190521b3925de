"""The supervisor's phase (running, draining, stopping) with its drain
deadline, and what each signal means: the loop calls ``handle_<signal>``.

It owns the phase and the deadline; it is given the pools it acts on and
the clock. Stopping and draining reach the children through the pools.

A signal carries no pool's name: SIGHUP rolls every pool over, and SIGTTIN
and SIGTTOU step every pool by one child, each within its own bounds (at
least one child, at most ``MAX_CHILDREN``)."""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence

import setproctitle

from ..config import PreforkConfig
from ..observability import logfiles
from .children import Phase
from .pool import Pool
from .system import System

logger = logging.getLogger("procrastinate_prefork.supervisor")


class Lifecycle:
    def __init__(self, config: PreforkConfig, system: System, pools: Sequence[Pool]):
        self.config = config
        self.system = system
        self.pools = list(pools)
        self.phase: Phase = Phase.RUNNING
        self.deadline: float | None = None  # of the drain
        self.title = ""

    def retitle(self) -> None:
        """The process title: phase, size, queues (of each pool, if several)."""
        parts = []
        for pool in self.pools:
            queues = pool.config.queues
            text = f"{pool.target} children, {','.join(queues or ['all queues'])}"
            parts.append(text if len(self.pools) == 1 else f"{pool.name}: {text}")
        title = (
            f"procrastinate-prefork supervisor [{self.phase.value}] "
            f"{'; '.join(parts)} ({self.config.hostname})"
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
        for pool in self.pools:
            pool.signal_all(signal.SIGUSR1)

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
            for pool in self.pools:
                pool.grow()

    def handle_ttou(self) -> None:
        if self.running:
            for pool in self.pools:
                pool.shrink()

    def handle_hup(self) -> None:
        if self.running:
            for pool in self.pools:
                pool.rolling_restart()

    @property
    def children(self) -> int:
        return sum(len(pool.children) for pool in self.pools)

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
            self.children,
            timeout,
            extra={"action": "drain"},
        )
        for pool in self.pools:
            pool.drain(deadline)

    def stop_now(self, why: str) -> None:
        self.phase = Phase.STOPPING
        logger.warning(
            "%s: stopping now, killing %d child(ren)",
            why,
            self.children,
            extra={"action": "stop_now"},
        )
        for pool in self.pools:
            pool.stop_now()
