"""Finished jobs, told by each child to its supervisor through shared memory.

Each slot has a small ring of records (queue, task, outcome, duration) and a
count of records ever written. Only the slot's child writes it; the
supervisor reads what is new on each turn of its loop and on the child's
death, before the slot is reused, and keeps the totals itself: they survive
the child and nothing is counted twice. A record carries its own sequence
number, so one overwritten while being read (a child more than ``RING`` jobs
ahead of the reader) is seen as lost, never counted wrong.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import mmap
import struct

RING = 64
NAME_BYTES = 120

# seq (1-based; 0: never written), outcome, duration, queue, task
_RECORD = struct.Struct(f"<qqd{NAME_BYTES}s{NAME_BYTES}s")
_COUNT = struct.Struct("<q")


class Outcome(enum.IntEnum):
    SUCCEEDED = 1
    FAILED = 2
    ABORTED = 3
    RETRIED = 4


@dataclasses.dataclass(frozen=True)
class Finished:
    queue: str
    task: str
    outcome: Outcome
    #: None: the job never ran (procrastinate failed it before its task, e.g.
    #: a task the app does not know)
    duration: float | None


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "replace")


def _raw(text: str) -> bytes:
    return text.encode("utf-8")[:NAME_BYTES]


class JobRing:
    """One ring per slot, in one anonymous region mapped before any fork."""

    def __init__(self, size: int):
        self.stride = _COUNT.size + RING * _RECORD.size
        self._mem = mmap.mmap(-1, max(1, size) * self.stride)

    def close(self) -> None:
        self._mem.close()

    def written(self, slot: int) -> int:
        return int(_COUNT.unpack_from(self._mem, slot * self.stride)[0])

    def clear(self, slot: int) -> None:
        offset = slot * self.stride
        self._mem[offset : offset + self.stride] = bytes(self.stride)

    def append(self, slot: int, record: Finished) -> None:
        """Child side: write the record, then publish it by the count."""
        seq = self.written(slot) + 1
        offset = slot * self.stride + _COUNT.size
        _RECORD.pack_into(
            self._mem,
            offset + (seq - 1) % RING * _RECORD.size,
            seq,
            int(record.outcome),
            math.nan if record.duration is None else record.duration,
            _raw(record.queue),
            _raw(record.task),
        )
        _COUNT.pack_into(self._mem, slot * self.stride, seq)

    def read_since(self, slot: int, seen: int) -> tuple[list[Finished], int, int]:
        """Supervisor side: records after the first ``seen``; returns them,
        the new ``seen`` and how many were lost (overwritten before read)."""
        count = self.written(slot)
        if count < seen:  # a new child in the slot: its ring started over
            seen = 0
        first = max(seen, count - RING)
        lost = first - seen
        offset = slot * self.stride + _COUNT.size
        records = []
        for seq in range(first + 1, count + 1):
            at = offset + (seq - 1) % RING * _RECORD.size
            got, outcome, duration, queue, task = _RECORD.unpack_from(self._mem, at)
            # the seq again: a write over the record while it was read shows
            if got != seq or _COUNT.unpack_from(self._mem, at)[0] != seq:
                lost += 1
                continue
            records.append(
                Finished(
                    _text(queue),
                    _text(task),
                    Outcome(outcome),
                    None if math.isnan(duration) else duration,
                )
            )
        return records, count, lost
