"""What the supervisor asks of the operating system and of the clock.

One seam, so that tests drive the supervisor's loop in-process (no fork, no
real child, no waiting) by handing it a ``System`` of their own; everything
else (pipes, ``select``, shared memory) stays real.
"""

from __future__ import annotations

import datetime
import os
import time


class System:
    """The real thing: ``os`` and ``time``."""

    def fork(self) -> int:
        return os.fork()

    def waitpid(self, pid: int, options: int) -> tuple[int, int]:
        return os.waitpid(pid, options)

    def kill(self, pid: int, signum: int) -> None:
        os.kill(pid, signum)

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.timezone.utc)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
