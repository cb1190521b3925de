"""What the supervisor's parts are given in unit tests: a ``System`` whose
children exist only as pids and whose clock moves when told, and a
database session that never answers."""

from __future__ import annotations

import signal
import time
from typing import Any

from procrastinate_prefork.supervisor.system import System


def exited(code: int) -> int:
    """A ``waitpid`` status for an exit with ``code``."""
    return code << 8


def killed(signum: int) -> int:
    return signum


class FakeSystem(System):
    """Children that exist only as pids; a clock that moves when told."""

    def __init__(self) -> None:
        self.clock = time.monotonic()  # the scoreboard stamps with the real one
        self.next_pid = 10_000
        self.alive: set[int] = set()
        self.exits: list[tuple[int, int]] = []
        self.sent: list[tuple[int, int]] = []
        self.fail_forks = 0

    def fork(self) -> int:
        if self.fail_forks:
            self.fail_forks -= 1
            raise OSError(11, "Resource temporarily unavailable")
        self.next_pid += 1
        self.alive.add(self.next_pid)
        return self.next_pid

    def waitpid(self, pid: int, options: int) -> tuple[int, int]:
        if self.exits:
            return self.exits.pop(0)
        if not self.alive:
            raise ChildProcessError
        return 0, 0

    def kill(self, pid: int, signum: int) -> None:
        if pid not in self.alive:
            raise ProcessLookupError
        self.sent.append((pid, signum))
        if signum == signal.SIGKILL:
            self.die(pid, killed(signal.SIGKILL))

    def die(self, pid: int, status: int) -> None:
        self.alive.discard(pid)
        self.exits.append((pid, status))

    def monotonic(self) -> float:
        return self.clock

    def sleep(self, seconds: float) -> None:
        self.clock += seconds


class DownDB:
    """A supervisor session whose database never answers."""

    is_up = False
    app_name = "test"

    def __init__(self) -> None:
        self.on_connect = lambda: None
        self.channels: list[str] = []

    def run(self, work: Any) -> None:
        return None

    def fileno(self) -> None:
        return None

    def wants_write(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def ensure(self) -> None:
        return None

    def notifications(self) -> list[tuple[str, str]]:
        return []


class FakeApp:
    def __init__(self) -> None:
        self.tasks: dict[str, Any] = {}
