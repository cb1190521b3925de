"""Recent events for the live page: child deaths, time limits and the
recoveries of jobs whose process died, with their cause.

The logs hold them too, but no page can read a log, and metrics only count
them. The supervisor keeps the events of each loop turn and writes them in one
statement (a few rows at a time, and only when something died); a pruning
supervisor keeps the latest ``EVENTS_KEPT`` rows of the whole fleet.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import psycopg

from . import queries

#: rows of the events table kept for the fleet (the live page shows the latest)
EVENTS_KEPT = 1000
#: events kept in memory while the database is down (the oldest go first)
MAX_PENDING = 200

#: what ``metrics.exit_cause`` calls a death -> the kind of its event; clean
#: exits (recycled, retired, exit code 0) are no event
KIND_OF_EXIT = {
    "time_limit": "time_limit",
    "wedged": "killed",
    "killed": "killed",
    "signal": "crash",
    "exit": "crash",
}


@dataclasses.dataclass(frozen=True)
class Event:
    kind: str  # crash, killed, time_limit, recovered
    slot: int | None = None
    pid: int | None = None
    job_id: int | None = None
    task_name: str | None = None
    queue_name: str | None = None
    cause: str | None = None
    outcome: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    rss_bytes: int | None = None


def death_event(
    exit_cause: str,
    exit_code: int | None,
    *,
    slot: int,
    pid: int,
    cause: str,
    signal: int | None,
    job_id: int | None,
    task_name: str | None,
    rss_bytes: int | None,
) -> Event | None:
    """The event of a child's death, None for a clean one (``exit_cause``
    is the label ``metrics.exit_cause`` gave it)."""
    kind = KIND_OF_EXIT.get(exit_cause)
    if kind is None or (exit_cause == "exit" and exit_code == 0):
        return None
    return Event(
        kind=kind,
        slot=slot,
        pid=pid,
        job_id=job_id,
        task_name=task_name,
        cause=cause[:255],
        exit_code=exit_code,
        signal=signal,
        rss_bytes=rss_bytes,
    )


def keep(pending: list[Event], new: Sequence[Event]) -> list[Event]:
    """``pending`` with ``new`` added, the oldest dropped past MAX_PENDING."""
    return [*pending, *new][-MAX_PENDING:]


def write(
    conn: psycopg.Connection,
    *,
    host: str,
    supervisor_id: int | None,
    queues: Sequence[str] | None,
    events: Sequence[Event],
) -> bool:
    conn.execute(
        queries.get("insert_events"),
        {
            "host": host,
            "supervisor_id": supervisor_id,
            "queues": list(queues) if queues else None,
            "events": json.dumps([dataclasses.asdict(e) for e in events]),
        },
    )
    return True


def trim(conn: psycopg.Connection, kept: int = EVENTS_KEPT) -> None:
    conn.execute(queries.get("trim_events"), {"kept": kept})
