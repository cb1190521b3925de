"""What the live page shows besides the processes: the queues the fleet
serves (waiting, running, the oldest waiting job's age), the jobs finished per
minute, and the latest deaths, time limits and recoveries.

Every query is bounded: by the fleet's queues (through indexes of the todo
and doing jobs, never a walk of a queue's jobs past a cap), by the
supervisors' own per-minute counts (the fleet table), and by the events
table, which holds the latest rows only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ...fleet import health, queries
from ...fleet.snapshot import FleetSnapshot
from ...observability.metrics import MINUTES_KEPT

#: waiting jobs are counted up to this many per queue ("10000+")
WAITING_CAP = 10_000
#: queues shown at most (a fleet that serves all queues: those with jobs)
MAX_QUEUES = 50
EVENTS_SHOWN = 20


def connection() -> Any:
    """The Django connection procrastinate uses (as the health view's)."""
    from django.db import connections
    from procrastinate.contrib.django import settings as procrastinate_settings

    return connections[procrastinate_settings.settings.DATABASE_ALIAS]


def _rows(connection: Any, sql: str, params: Mapping[str, Any]) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def served_queues(
    connection: Any, supervisors: Sequence[FleetSnapshot], query: health.FleetQuery
) -> list[str]:
    """The queues of the fleet the page shows: the filter's, else those
    its supervisors name; a supervisor of all queues adds those with jobs."""
    if query.queue is not None:
        return [query.queue]
    named = {q for s in supervisors for q in (s.queues or ())}
    if any(not s.queues for s in supervisors):
        rows = _rows(connection, queries.get("live_all_queues"), {"limit": MAX_QUEUES})
        named.update(row["name"] for row in rows)
    return sorted(named)[:MAX_QUEUES]


def queue_panel(connection: Any, queues: Sequence[str]) -> list[dict[str, Any]]:
    """Per queue: one statement each, planned for its name (never prepared:
    Django's cursor does not prepare)."""
    panel = []
    for queue in queues:
        (row,) = _rows(
            connection, queries.get("live_queue"), {"queue": queue, "cap": WAITING_CAP}
        )
        age = row["oldest_age"]
        panel.append(
            {
                "queue": queue,
                "waiting": int(row["waiting"]),
                "waiting_capped": int(row["waiting"]) >= WAITING_CAP,
                "running": int(row["running"]),
                "oldest_waiting_age": (
                    None if age is None else health.shown_age(float(age))
                ),
            }
        )
    return panel


def finished_per_minute(
    supervisors: Iterable[FleetSnapshot], now: float, minutes: int = MINUTES_KEPT
) -> list[dict[str, Any]]:
    """Jobs the supervisors' children finished in each of the last
    ``minutes`` minutes (unix time ``now``), oldest first; the last one is
    the minute under way."""
    current = int(now // 60)
    totals = dict.fromkeys(range(current - minutes + 1, current + 1), 0)
    for supervisor in supervisors:
        for minute, count in supervisor.finished_per_minute.items():
            if minute in totals:
                totals[minute] += count
    return [
        {"minute": minute * 60, "finished": count, "partial": minute == current}
        for minute, count in totals.items()
    ]


def latest_events(connection: Any, query: health.FleetQuery) -> list[dict[str, Any]]:
    rows = _rows(
        connection,
        queries.get("live_events"),
        {"host": query.host, "queue": query.queue, "limit": EVENTS_SHOWN},
    )
    for row in rows:
        row["age"] = health.shown_age(float(row["age"]))
    return rows
