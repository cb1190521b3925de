"""Shared-memory slots: how a child tells its supervisor what it is doing.

The supervisor maps one anonymous shared region before it forks; each child
writes only its own slot, the supervisor reads all of them with no I/O and no
thread. A sequence counter (odd while a write is in progress) lets the reader
retry instead of seeing a half-written slot.

Times are ``time.monotonic()``, which on Linux is one clock for all processes.
"""

from __future__ import annotations

import dataclasses
import enum
import mmap
import struct
import time

TASK_NAME_BYTES = 120


class State(enum.IntEnum):
    EMPTY = 0
    STARTING = 1
    IDLE = 2
    BUSY = 3
    DRAINING = 4
    STOPPED = 5


# seq, pid, state, heartbeat, started, worker_id, job_id, job_started,
# jobs_done, running, rss_bytes, task_name
_LAYOUT = struct.Struct(f"<qqqddqqdqqq{TASK_NAME_BYTES}s")


@dataclasses.dataclass(frozen=True)
class SlotView:
    slot: int
    pid: int
    state: State
    heartbeat: float
    started: float
    worker_id: int | None
    job_id: int | None
    job_started: float | None
    jobs_done: int
    running: int
    rss_bytes: int
    task_name: str | None

    def heartbeat_age(self, now: float) -> float:
        return max(0.0, now - self.heartbeat)

    def job_age(self, now: float) -> float | None:
        if self.job_id is None or self.job_started is None:
            return None
        return max(0.0, now - self.job_started)


class Scoreboard:
    def __init__(self, size: int):
        self.size = size
        self._mem = mmap.mmap(-1, max(1, size) * _LAYOUT.size)

    def close(self) -> None:
        self._mem.close()

    # --- supervisor side

    def reset(self, slot: int, pid: int = 0) -> None:
        """Claim ``slot`` for a child about to be forked. Called in the parent
        before the fork, so the child's first writes cannot be overwritten."""
        now = time.monotonic()
        _LAYOUT.pack_into(
            self._mem, slot * _LAYOUT.size,
            0, pid, int(State.STARTING), now, now, 0, 0, 0.0, 0, 0, 0, b"",
        )

    def set_pid(self, slot: int, pid: int) -> None:
        struct.pack_into("<q", self._mem, slot * _LAYOUT.size + 8, pid)

    def clear(self, slot: int) -> None:
        _LAYOUT.pack_into(
            self._mem, slot * _LAYOUT.size, 0, 0, 0, 0.0, 0.0, 0, 0, 0.0, 0, 0, 0, b""
        )

    def read(self, slot: int) -> SlotView:
        offset = slot * _LAYOUT.size
        for _ in range(100):
            fields = _LAYOUT.unpack_from(self._mem, offset)
            if fields[0] % 2 == 0 and _LAYOUT.unpack_from(self._mem, offset)[0] == fields[0]:
                break
        (_, pid, state, heartbeat, started, worker_id, job_id, job_started,
         jobs_done, running, rss, task) = fields
        return SlotView(
            slot=slot, pid=pid, state=State(state), heartbeat=heartbeat,
            started=started, worker_id=worker_id or None, job_id=job_id or None,
            job_started=job_started or None, jobs_done=jobs_done, running=running,
            rss_bytes=rss,
            task_name=task.rstrip(b"\0").decode("utf-8", "replace") or None,
        )


class SlotWriter:
    """A child's handle on its own slot."""

    def __init__(self, board: Scoreboard, slot: int):
        self._mem = board._mem
        self._offset = slot * _LAYOUT.size
        self.slot = slot

    def _update(self, **changes: object) -> None:
        fields = list(_LAYOUT.unpack_from(self._mem, self._offset))
        seq = fields[0]
        struct.pack_into("<q", self._mem, self._offset, seq + 1)
        names = ("seq", "pid", "state", "heartbeat", "started", "worker_id",
                 "job_id", "job_started", "jobs_done", "running", "rss", "task")
        for key, value in changes.items():
            fields[names.index(key)] = value
        fields[0] = seq + 1
        _LAYOUT.pack_into(self._mem, self._offset, *fields)
        struct.pack_into("<q", self._mem, self._offset, seq + 2)

    def beat(self, rss: int | None = None) -> None:
        if rss is None:
            self._update(heartbeat=time.monotonic())
        else:
            self._update(heartbeat=time.monotonic(), rss=rss)

    def set_state(self, state: State) -> None:
        self._update(state=int(state), heartbeat=time.monotonic())

    def set_worker_id(self, worker_id: int) -> None:
        self._update(worker_id=worker_id)

    def job_started(self, job_id: int, task_name: str, running: int) -> None:
        self._update(
            job_id=job_id, job_started=time.monotonic(), running=running,
            task=task_name.encode("utf-8")[:TASK_NAME_BYTES], state=int(State.BUSY),
        )

    def job_finished(self, running: int, jobs_done: int, draining: bool) -> None:
        state = State.DRAINING if draining else (State.BUSY if running else State.IDLE)
        changes: dict[str, object] = {
            "running": running, "jobs_done": jobs_done, "state": int(state)
        }
        if not running:
            changes.update(job_id=0, job_started=0.0, task=b"")
        self._update(**changes)
