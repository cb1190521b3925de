"""The wake-up pipe between the supervisor and each child.

The supervisor holds the host's one LISTEN session and forwards what it hears
to every child through a pipe, one notification a line: ``<channel> <payload>``
(the payload is procrastinate's JSON, which holds no newline). The child hands
each line to procrastinate's worker as if its own LISTEN had received it."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

#: What procrastinate's worker takes as "a job may be waiting in any queue".
JOB_INSERTED = ("procrastinate_any_queue_v1", '{"type": "job_inserted"}')


#: what ``_kind`` answers for a payload that is not a JSON object
_UNREADABLE = object()


def _kind(payload: str) -> Any:
    """The ``type`` of procrastinate's JSON payload (None if it has none),
    ``_UNREADABLE`` if the payload is not a JSON object."""
    try:
        return json.loads(payload).get("type")
    except (ValueError, AttributeError):
        return _UNREADABLE


def is_job_inserted(payload: str) -> bool:
    """Whether a notification's payload says a job may be waiting."""
    return bool(_kind(payload) == "job_inserted")


def to_forward(
    notifications: Iterable[tuple[str, str]], wake: bool
) -> list[tuple[str, str]]:
    """What to send every child for this turn's ``notifications``: any number
    of "job inserted" collapse into one wake (one per child per turn is
    enough), added too when ``wake`` asks for it; other notifications (aborts)
    go as they came; unreadable payloads are dropped."""
    lines = []
    for channel, payload in notifications:
        kind = _kind(payload)
        if kind is _UNREADABLE:
            continue
        if kind == "job_inserted":
            wake = True
        else:
            lines.append((channel, payload))
    if wake:
        lines.append(JOB_INSERTED)
    return lines


#: procrastinate's channel prefix of one queue's notifications
QUEUE_CHANNEL = "procrastinate_queue_v1#"
ANY_QUEUE_CHANNEL = JOB_INSERTED[0]


def route(
    notifications: Iterable[tuple[str, str]],
    queue_sets: Sequence[tuple[str, ...] | None],
) -> list[list[tuple[str, str]]]:
    """The notifications each pool's children get, for pools serving
    ``queue_sets`` (``None``: every queue). One pool gets them all. Otherwise
    a queue's channel goes to the pools that serve the queue but not to those
    serving every queue: procrastinate notifies every job on the channel of
    all queues too, and that one goes to them alone."""
    notifications = list(notifications)
    if len(queue_sets) == 1:
        return [notifications]
    routed: list[list[tuple[str, str]]] = [[] for _ in queue_sets]
    for channel, payload in notifications:
        for index, queues in enumerate(queue_sets):
            if channel == ANY_QUEUE_CHANNEL:
                wanted = queues is None
            elif channel.startswith(QUEUE_CHANNEL):
                wanted = queues is not None and (
                    channel.removeprefix(QUEUE_CHANNEL) in queues
                )
            else:
                wanted = False
            if wanted:
                routed[index].append((channel, payload))
    return routed


def encode(notifications: Iterable[tuple[str, str]]) -> bytes:
    return "".join(
        f"{channel} {payload}\n" for channel, payload in notifications
    ).encode()


def send_wake(fd: int, data: bytes) -> None:
    """Write ``data`` to a child's (non-blocking) pipe without ever waiting."""
    try:
        os.write(fd, data)
    except BlockingIOError:
        pass  # a child that reads nothing will poll anyway
    except OSError as exc:
        if exc.errno != errno.EPIPE:  # a child that died is reaped elsewhere
            raise


async def read_wakes(fd: int) -> AsyncIterator[tuple[str, str]]:
    """``(channel, payload)`` for each line the supervisor writes, until it closes
    the pipe. Takes ownership of ``fd``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(fd, "rb", buffering=0)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    while line := await reader.readline():
        text = line.decode("utf-8", "replace").rstrip("\n")
        channel, _, payload = text.partition(" ")
        yield channel, payload
