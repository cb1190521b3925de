"""Finished jobs, told by each child to its supervisor through shared memory.

Each slot has a small ring of records (queue, task, outcome, duration, how
many jobs), a count of records ever written (the child's) and a count of
records read (the supervisor's). The child writes a record only where the
supervisor has read the one before it, so no record is overwritten unread:
what finds the ring full waits in the child (``Outbox``), merged with the
records of the same labels and histogram bucket, and goes in as soon as the
supervisor has read (on each job's end and each beat). The supervisor reads
what is new on each turn of its loop and on the child's death, before the
slot is reused, and keeps the totals itself: they survive the child and
nothing is counted twice. The child also publishes how many jobs it holds
outside the ring: a child that dies holding some has them counted as lost.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import math
import mmap
import struct
from collections.abc import Sequence

RING = 64
NAME_BYTES = 120
#: label sets an outbox holds before it merges new ones under ``OTHER``
OUTBOX_KEYS = 256
#: the label value of everything past a label limit (queue and task alike)
OTHER = "__other__"

# seq (1-based; 0: never written), outcome, jobs, one job's duration, the
# jobs' total duration, queue, task
_RECORD = struct.Struct(f"<qqqdd{NAME_BYTES}s{NAME_BYTES}s")
# written (the child's), read (the supervisor's), jobs held in the outbox
_HEADER = struct.Struct("<qqq")
_COUNT = struct.Struct("<q")
_WRITTEN, _READ, _HELD = 0, 8, 16


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
    #: one of the jobs' durations: all of them fall in its histogram bucket.
    #: None: the jobs never ran (procrastinate failed them before their
    #: task, e.g. a task the app does not know)
    duration: float | None
    #: jobs the record counts: more than one when the ring was full
    count: int = 1
    #: seconds the ``count`` jobs ran in all (``duration`` for one job)
    total: float | None = None

    def __post_init__(self) -> None:
        if self.total is None and self.duration is not None:
            object.__setattr__(self, "total", self.duration * self.count)


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "replace")


def _raw(text: str) -> bytes:
    return text.encode("utf-8")[:NAME_BYTES]


class JobRing:
    """One ring per slot, in one anonymous region mapped before any fork."""

    def __init__(self, size: int):
        self.stride = _HEADER.size + RING * _RECORD.size
        self._mem = mmap.mmap(-1, max(1, size) * self.stride)

    def close(self) -> None:
        self._mem.close()

    def _get(self, slot: int, field: int) -> int:
        return int(_COUNT.unpack_from(self._mem, slot * self.stride + field)[0])

    def _set(self, slot: int, field: int, value: int) -> None:
        _COUNT.pack_into(self._mem, slot * self.stride + field, value)

    def written(self, slot: int) -> int:
        return self._get(slot, _WRITTEN)

    def held(self, slot: int) -> int:
        """Jobs the slot's child finished and holds outside the ring."""
        return self._get(slot, _HELD)

    def hold(self, slot: int, jobs: int) -> None:
        """Child side: publish how many jobs it holds outside the ring."""
        self._set(slot, _HELD, jobs)

    def clear(self, slot: int) -> None:
        offset = slot * self.stride
        self._mem[offset : offset + self.stride] = bytes(self.stride)

    def room(self, slot: int) -> int:
        return RING - (self.written(slot) - self._get(slot, _READ))

    def append(self, slot: int, record: Finished) -> bool:
        """Child side: write the record, then publish it by the count;
        False, with nothing written, when the ring is full."""
        if self.room(slot) <= 0:
            return False
        seq = self.written(slot) + 1
        _RECORD.pack_into(
            self._mem,
            slot * self.stride + _HEADER.size + (seq - 1) % RING * _RECORD.size,
            seq,
            int(record.outcome),
            record.count,
            math.nan if record.duration is None else record.duration,
            math.nan if record.total is None else record.total,
            _raw(record.queue),
            _raw(record.task),
        )
        self._set(slot, _WRITTEN, seq)
        return True

    def read(self, slot: int) -> tuple[list[Finished], int]:
        """Supervisor side: the records not read yet, and how many jobs were
        lost (a record found overwritten: the protocol broken). Publishes the
        read position, which frees their places for the child."""
        count = self.written(slot)
        seen = self._get(slot, _READ)
        offset = slot * self.stride + _HEADER.size
        records = []
        lost = 0
        for seq in range(seen + 1, count + 1):
            at = offset + (seq - 1) % RING * _RECORD.size
            got, outcome, jobs, duration, total, queue, task = _RECORD.unpack_from(
                self._mem, at
            )
            if got != seq:
                lost += 1
                continue
            records.append(
                Finished(
                    _text(queue),
                    _text(task),
                    Outcome(outcome),
                    None if math.isnan(duration) else duration,
                    jobs,
                    None if math.isnan(total) else total,
                )
            )
        self._set(slot, _READ, count)
        return records, lost


class Outbox:
    """A child's side of its ring: records that find the ring full wait here,
    merged by (queue, task, outcome, histogram bucket), so that it holds at
    most ``OUTBOX_KEYS`` records, plus one per outcome and bucket under
    ``OTHER`` for new labels past that, however long the supervisor does not
    read: the jobs are all counted, some under merged labels."""

    def __init__(self, ring: JobRing, slot: int, bounds: Sequence[float]):
        self.ring = ring
        self.slot = slot
        self.bounds = bounds
        self.waiting: dict[tuple[str, str, Outcome, int], Finished] = {}
        #: jobs in ``waiting``, as published in the ring's header
        self.held = 0

    def add(self, record: Finished) -> None:
        if not self.waiting and self.ring.append(self.slot, record):
            return
        self._hold(record)
        self.flush()

    def _hold(self, record: Finished) -> None:
        bucket = -1
        if record.duration is not None:
            bucket = bisect.bisect_left(self.bounds, record.duration)
        key = (record.queue, record.task, record.outcome, bucket)
        if key not in self.waiting and len(self.waiting) >= OUTBOX_KEYS:
            key = (OTHER, OTHER, record.outcome, bucket)
            record = dataclasses.replace(record, queue=OTHER, task=OTHER)
        old = self.waiting.get(key)
        if old is not None:  # same bucket: both ran, or neither did
            record = dataclasses.replace(
                old,
                count=old.count + record.count,
                total=None
                if old.total is None or record.total is None
                else old.total + record.total,
            )
        self.waiting[key] = record
        self._publish(self.held + record.count - (old.count if old else 0))

    def flush(self) -> None:
        """Move what the ring has room for into it (oldest labels first)."""
        while self.waiting:
            key = next(iter(self.waiting))
            record = self.waiting[key]
            if not self.ring.append(self.slot, record):
                return
            del self.waiting[key]
            # a kill between the two writes counts these jobs twice (counted
            # and lost), never not at all
            self._publish(self.held - record.count)

    def _publish(self, held: int) -> None:
        self.held = held
        self.ring.hold(self.slot, held)
