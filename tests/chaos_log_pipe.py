"""The chaos run's log pipe: one supervisor's stdout is a FIFO read by a
``cat`` process, as a log shipper or journald reads a service's output. The
driver kills the reader (writes then fail with EPIPE, flushes at exit too)
and later starts a new one on the same FIFO (the shipper restarted), while
that supervisor's children are retired by SIGTTOU and SIGHUP.

The children of that host print a word to their block-buffered stdout at
each marker (``CHAOS_STDOUT``, see ``tests/apps/chaos_app.py``), so that a
retired child always has something to flush on its way out.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

#: the environment of the supervisor whose stdout is the pipe
PIPE_ENV = {"PYTHONUNBUFFERED": "", "CHAOS_STDOUT": "1"}
#: records only a supervisor logs: from any other process of the fleet, a
#: child ran the supervisor's code
SUPERVISOR_ONLY = frozenset(
    {
        "child_started",
        "child_exited",
        "fork_failed",
        "supervisor_crashed",
        "supervisor_stopped",
    }
)


class LogPipe:
    def __init__(self, directory: Path):
        self.fifo = directory / "fleet-stdout.fifo"
        self.output = directory / "fleet-stdout.txt"
        self.reader: subprocess.Popen[bytes] | None = None
        self.readers = 0  # started so far

    def start_reader(self) -> None:
        if not self.fifo.exists():
            os.mkfifo(self.fifo)
        with open(self.output, "ab") as out:
            self.reader = subprocess.Popen(["cat", str(self.fifo)], stdout=out)
        self.readers += 1

    def kill_reader(self) -> None:
        if self.reader is not None:
            self.reader.kill()
            self.reader.wait(timeout=10)
            self.reader = None

    def writer(self) -> int:
        """A write end for a new supervisor's stdout (the caller closes it once
        the process is started); a reader must be there to open it."""
        if self.reader is None:
            self.start_reader()
        return os.open(self.fifo, os.O_WRONLY)

    def close(self) -> None:
        self.kill_reader()


def stray_supervisor_records(
    events: list[dict[str, object]], supervisors: set[int]
) -> list[str]:
    """Problems: records only a supervisor logs, logged by another process."""
    return [
        f"process {e['process']} (not a supervisor) logged {e['action']}"
        for e in events
        if e.get("action") in SUPERVISOR_ONLY and e.get("process") not in supervisors
    ]
