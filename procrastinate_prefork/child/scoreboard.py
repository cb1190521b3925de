"""Shared-memory slots: how a child tells its supervisor what it is doing.

The supervisor maps one anonymous shared region before it forks; each child
writes only its own slot, the supervisor reads all of them with no I/O and no
thread. A sequence counter (odd while a write is in progress) lets the reader
retry instead of seeing a half-written slot.

A slot holds every job its child runs at once (``--child-concurrency``, fixed
at start): the supervisor limits each job's time on its own and blames the
right one.

Times are ``time.monotonic()``, which on Linux is one clock for all processes.
"""

from __future__ import annotations

import dataclasses
import enum
import mmap
import struct
import time

from .jobring import JobRing

TASK_NAME_BYTES = 120


class State(enum.IntEnum):
    EMPTY = 0
    STARTING = 1
    IDLE = 2
    BUSY = 3
    DRAINING = 4
    STOPPED = 5


# seq, pid, state, heartbeat, started, worker_id, jobs_done, running, rss_bytes,
# used (entries in use are all below this index)
_HEADER = struct.Struct("<qqqddqqqqq")
_HEADER_NAMES = (
    "seq",
    "pid",
    "state",
    "heartbeat",
    "started",
    "worker_id",
    "jobs_done",
    "running",
    "rss",
    "used",
)
# one running job: job_id (0: free entry), started, task_name
_ENTRY = struct.Struct(f"<qd{TASK_NAME_BYTES}s")


@dataclasses.dataclass(frozen=True)
class RunningJob:
    job_id: int
    started: float
    task_name: str | None

    def age(self, now: float) -> float:
        return max(0.0, now - self.started)


@dataclasses.dataclass(frozen=True)
class SlotView:
    slot: int
    pid: int
    state: State
    heartbeat: float
    started: float
    worker_id: int | None
    jobs_done: int
    running: int
    rss_bytes: int
    #: every job the child runs now, oldest first
    jobs: tuple[RunningJob, ...] = ()

    @property
    def oldest(self) -> RunningJob | None:
        return self.jobs[0] if self.jobs else None

    @property
    def job_id(self) -> int | None:
        return self.jobs[0].job_id if self.jobs else None

    @property
    def task_name(self) -> str | None:
        return self.jobs[0].task_name if self.jobs else None

    @property
    def job_started(self) -> float | None:
        return self.jobs[0].started if self.jobs else None

    def heartbeat_age(self, now: float) -> float:
        return max(0.0, now - self.heartbeat)

    def job_age(self, now: float) -> float | None:
        """Age of the oldest running job (None when idle)."""
        return self.jobs[0].age(now) if self.jobs else None


class Scoreboard:
    def __init__(self, size: int, jobs_per_slot: int = 1):
        self.size = size
        self.jobs_per_slot = max(1, jobs_per_slot)
        self.stride = _HEADER.size + self.jobs_per_slot * _ENTRY.size
        # after the slots: the pid of the child that runs the periodic
        # deferrer, then when the supervisor last ran its polls
        self._deferrer_offset = max(1, size) * self.stride
        self._polled_offset = self._deferrer_offset + 8
        self._mem = mmap.mmap(-1, self._polled_offset + 8)
        #: each slot's finished jobs, for the metrics
        self.finished = JobRing(size)

    def close(self) -> None:
        self._mem.close()
        self.finished.close()

    # --- supervisor side

    def reset(self, slot: int, pid: int = 0) -> None:
        """Claim ``slot`` for a child about to be forked. Called in the parent
        before the fork, so the child's first writes cannot be overwritten."""
        self.clear(slot)
        now = time.monotonic()
        _HEADER.pack_into(
            self._mem,
            slot * self.stride,
            0,
            pid,
            int(State.STARTING),
            now,
            now,
            0,
            0,
            0,
            0,
            0,
        )

    def set_deferrer(self, pid: int) -> None:
        """Which child runs procrastinate's periodic deferrer (0: none). One
        aligned 8-byte write: a child reads the old pid or the new one."""
        struct.pack_into("<q", self._mem, self._deferrer_offset, pid)

    def deferrer(self) -> int:
        return int(struct.unpack_from("<q", self._mem, self._deferrer_offset)[0])

    def set_polled(self, at: float) -> None:
        """When the supervisor last ran its polls for the host (monotonic
        clock, the same in every process of the host); 0 until the first."""
        struct.pack_into("<d", self._mem, self._polled_offset, at)

    def polled(self) -> float:
        return float(struct.unpack_from("<d", self._mem, self._polled_offset)[0])

    def set_pid(self, slot: int, pid: int) -> None:
        struct.pack_into("<q", self._mem, slot * self.stride + 8, pid)

    def clear(self, slot: int) -> None:
        offset = slot * self.stride
        self._mem[offset : offset + self.stride] = bytes(self.stride)

    def read(self, slot: int) -> SlotView:
        offset = slot * self.stride
        for _ in range(100):
            header = _HEADER.unpack_from(self._mem, offset)
            used = min(max(header[9], 0), self.jobs_per_slot)
            entries = [
                _ENTRY.unpack_from(self._mem, offset + _HEADER.size + i * _ENTRY.size)
                for i in range(used)
            ]
            seq = struct.unpack_from("<q", self._mem, offset)[0]
            if header[0] % 2 == 0 and seq == header[0]:
                break
        (_, pid, state, heartbeat, started, worker_id, jobs_done, running, rss, _) = (
            header
        )
        jobs = sorted(
            (
                RunningJob(
                    job_id=job_id,
                    started=job_started,
                    task_name=task.rstrip(b"\0").decode("utf-8", "replace") or None,
                )
                for job_id, job_started, task in entries
                if job_id
            ),
            key=lambda job: (job.started, job.job_id),
        )
        return SlotView(
            slot=slot,
            pid=pid,
            state=State(state),
            heartbeat=heartbeat,
            started=started,
            worker_id=worker_id or None,
            jobs_done=jobs_done,
            running=running,
            rss_bytes=rss,
            jobs=tuple(jobs),
        )


class SlotWriter:
    """A child's handle on its own slot. Only the child writes it, from its
    event loop's thread."""

    def __init__(self, board: Scoreboard, slot: int):
        self._mem = board._mem
        self._offset = slot * board.stride
        self._capacity = board.jobs_per_slot
        self.slot = slot

    def _update(
        self,
        entries: dict[int, tuple[int, float, bytes]] | None = None,
        **changes: object,
    ) -> None:
        fields = list(_HEADER.unpack_from(self._mem, self._offset))
        seq = fields[0]
        struct.pack_into("<q", self._mem, self._offset, seq + 1)  # odd: writing
        for index, entry in (entries or {}).items():
            _ENTRY.pack_into(
                self._mem, self._offset + _HEADER.size + index * _ENTRY.size, *entry
            )
        for key, value in changes.items():
            fields[_HEADER_NAMES.index(key)] = value
        fields[0] = seq + 1
        _HEADER.pack_into(self._mem, self._offset, *fields)
        struct.pack_into("<q", self._mem, self._offset, seq + 2)

    def _job_ids(self) -> list[int]:
        base = self._offset + _HEADER.size
        return [
            struct.unpack_from("<q", self._mem, base + i * _ENTRY.size)[0]
            for i in range(self._capacity)
        ]

    def beat(self, rss: int | None = None) -> None:
        if rss is None:
            self._update(heartbeat=time.monotonic())
        else:
            self._update(heartbeat=time.monotonic(), rss=rss)

    def set_state(self, state: State) -> None:
        self._update(state=int(state), heartbeat=time.monotonic())

    def set_worker_id(self, worker_id: int) -> None:
        self._update(worker_id=worker_id)

    def job_started(self, job_id: int, task_name: str, running: int) -> bool:
        """Record a job that starts; False if the slot has no free entry left
        (more jobs at once than the child concurrency it was sized for)."""
        ids = self._job_ids()
        if 0 not in ids:
            self._update(running=running, state=int(State.BUSY))
            return False
        index = ids.index(0)
        ids[index] = job_id
        entry = (job_id, time.monotonic(), task_name.encode("utf-8")[:TASK_NAME_BYTES])
        self._update(
            {index: entry},
            running=running,
            state=int(State.BUSY),
            used=_used(ids),
        )
        return True

    def job_finished(
        self, job_id: int, running: int, jobs_done: int, draining: bool
    ) -> None:
        ids = self._job_ids()
        freed = {i: (0, 0.0, b"") for i, found in enumerate(ids) if found == job_id}
        for index in freed:
            ids[index] = 0
        state = State.DRAINING if draining else (State.BUSY if running else State.IDLE)
        self._update(
            freed,
            running=running,
            jobs_done=jobs_done,
            state=int(state),
            used=_used(ids),
        )


def _used(job_ids: list[int]) -> int:
    """One past the last entry in use."""
    return max((i + 1 for i, job_id in enumerate(job_ids) if job_id), default=0)
