"""Health rules, as pure functions of the facts: no I/O, no clock reads.

For the **fleet** (``status``, the Django views: the fleet table) and the
**probe port** of one supervisor (its scoreboard). All of it is meant to be
shown: no job arguments, DSN or password (whitelisted fields only).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..supervisor.policy import STALLED_TIMEOUT
from .verdicts import (
    WORKING_STATES,
    Verdict,
    liveness,
    readiness,
    shown_age,
    supervisor_report,
)

if TYPE_CHECKING:
    from .snapshot import ChildSnapshot, FleetSnapshot

__all__ = [
    "WORKING_STATES",
    "FleetHealth",
    "FleetQuery",
    "QueryError",
    "Verdict",
    "fleet_health",
    "liveness",
    "readiness",
    "supervisor_report",
]
#: heartbeat age after which a row is stale, for rows that do not record their
#: supervisor's --stalled-timeout: that option's default
DEFAULT_STALE_AFTER = STALLED_TIMEOUT
MAX_MIN_CHILDREN = 100_000
MAX_NAME = 255
#: supervisors listed by default (``--limit``, ``?limit=``); 0 lists all
DEFAULT_LIMIT = 50
MAX_LIMIT = 10_000

HEALTHY = "healthy"
UNHEALTHY = "unhealthy"


class QueryError(ValueError):
    """A bad filter parameter. The message is one line, for the user."""


# --------------------------------------------------------------- the fleet


@dataclasses.dataclass(frozen=True)
class FleetQuery:
    """Which supervisors to judge, how many fresh children are enough, and
    how many of the supervisors judged to list (0: all)."""

    host: str | None = None
    queue: str | None = None
    min_children: int = 1
    limit: int = DEFAULT_LIMIT

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> FleetQuery:
        """From query parameters (``host``, ``queue``, ``min_children``,
        ``limit``), each given at most once; a value may be a string or a list
        of strings (as Django's ``QueryDict.lists()`` gives them). Unknown
        names are errors."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise QueryError(
                f"unknown parameter {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )
        values: dict[str, Any] = {}
        for name, raw in params.items():
            if isinstance(raw, (list, tuple)):
                if len(raw) != 1:
                    raise QueryError(f"parameter {name!r} given {len(raw)} times")
                raw = raw[0]
            values[name] = raw
        return cls.build(**values)

    @classmethod
    def build(
        cls,
        host: Any = None,
        queue: Any = None,
        min_children: Any = None,
        limit: Any = None,
    ) -> FleetQuery:
        return cls(
            host=_name("host", host),
            queue=_name("queue", queue),
            min_children=_count("min_children", min_children, 1, MAX_MIN_CHILDREN),
            limit=_count("limit", limit, DEFAULT_LIMIT, MAX_LIMIT),
        )

    def matches(self, supervisor: FleetSnapshot) -> bool:
        if self.host is not None and supervisor.host != self.host:
            return False
        if self.queue is not None:
            queues = supervisor.queues
            # a supervisor without queues works on every queue
            if queues and self.queue not in queues:
                return False
        return True


def _name(param: str, value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        raise QueryError(f"parameter {param!r} must not be empty")
    if len(text) > MAX_NAME:
        raise QueryError(f"parameter {param!r} must be at most {MAX_NAME} characters")
    if not text.isprintable():
        raise QueryError(f"parameter {param!r} must be printable text")
    return text


def _count(param: str, value: Any, default: int, maximum: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool):
        raise QueryError(f"parameter {param!r} must be an integer, got {value!r}")
    try:
        number = value if isinstance(value, int) else int(str(value).strip())
    except ValueError:
        raise QueryError(
            f"parameter {param!r} must be an integer, got {str(value)[:40]!r}"
        ) from None
    if not 0 <= number <= maximum:
        raise QueryError(
            f"parameter {param!r} must be between 0 and {maximum}, got {number}"
        )
    return number


def stale_after(supervisor: FleetSnapshot) -> float:
    """Heartbeat age beyond which ``supervisor`` and its children count as
    gone: its ``--stalled-timeout`` (the age after which its jobs would be
    recovered by others anyway)."""
    return supervisor.stalled_timeout or DEFAULT_STALE_AFTER


def is_fresh(supervisor: FleetSnapshot, child: ChildSnapshot | None = None) -> bool:
    """Whether ``supervisor`` (or ``child``, one of its children) is not
    stopped and was heard from within its supervisor's stalled timeout."""
    if child is None:
        state, age = supervisor.phase, supervisor.heartbeat_age
    else:
        state, age = child.state, child.heartbeat_age
    return state != "stopped" and age <= stale_after(supervisor)


def has_problem(supervisor: FleetSnapshot) -> bool:
    """Listed first: in a crash loop, or stale (as ``fleet_rows_selected``
    orders them)."""
    return supervisor.crash_looping or not is_fresh(supervisor)


def pick_listed(
    supervisors: Sequence[FleetSnapshot], limit: int
) -> list[FleetSnapshot]:
    """The ``limit`` supervisors to list (all with 0): those with a problem
    first, then by host and pid; in the order given."""
    if not limit or len(supervisors) <= limit:
        return list(supervisors)
    ranked = sorted(
        supervisors, key=lambda s: (not has_problem(s), s.host, s.pid, s.id)
    )
    chosen = {s.id for s in ranked[:limit]}
    return [s for s in supervisors if s.id in chosen]


def counts(supervisor: FleetSnapshot, child: ChildSnapshot) -> bool:
    """Whether ``child`` counts towards ``min_children``: it and its supervisor
    are fresh, and it is able to run jobs."""
    return (
        is_fresh(supervisor)
        and child.state in WORKING_STATES
        and is_fresh(supervisor, child)
    )


_SUPERVISOR_FIELDS = (
    "id",
    "host",
    "pid",
    "state",
    "crash_loop",
    "concurrency",
    "queues",
    "heartbeat_interval",
    "stalled_timeout",
    "rss_bytes",
    "restarts",
    "started_at",
    "last_heartbeat",
    "heartbeat_age",
    "uptime",
    "as_of_age",
)
#: the snapshot attribute behind a field of the document, where its name differs
_SUPERVISOR_ATTRIBUTES = {"state": "phase", "crash_loop": "crash_looping"}
_CHILD_FIELDS = (
    "slot",
    "pid",
    "worker_id",
    "state",
    "job_id",
    "task_name",
    "job_age",
    "jobs_done",
    "restarts",
    "rss_bytes",
    "started_at",
    "last_heartbeat",
    "heartbeat_age",
    "uptime",
    "as_of_age",
    "pool",
)
_AGE_FIELDS = frozenset({"heartbeat_age", "uptime", "job_age", "as_of_age"})


def _public(
    process: FleetSnapshot | ChildSnapshot,
    fields: Sequence[str],
    attributes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The whitelisted fields of a snapshot, JSON-ready."""
    out: dict[str, Any] = {}
    for name in fields:
        value = getattr(process, (attributes or {}).get(name, name))
        if isinstance(value, (datetime.datetime, datetime.date)):
            value = value.isoformat()
        elif name in _AGE_FIELDS and value is not None:
            value = shown_age(value)
        elif name == "queues" and value is not None:
            value = list(value)
        out[name] = value
    return out


def _supervisor_entry(supervisor: FleetSnapshot) -> dict[str, Any]:
    """What the fleet document shows of one supervisor and its children."""
    entry = _public(supervisor, _SUPERVISOR_FIELDS, _SUPERVISOR_ATTRIBUTES)
    entry["fresh"] = is_fresh(supervisor)
    entry["children"] = [
        {**_public(child, _CHILD_FIELDS), "fresh": counts(supervisor, child)}
        for child in supervisor.children
    ]
    entry["pools"] = [
        {
            **pool.as_dict(),
            "fresh_children": sum(
                counts(supervisor, c)
                for c in supervisor.children
                if c.pool == pool.name
            ),
        }
        for pool in supervisor.pool_list()
    ]
    return entry


@dataclasses.dataclass(frozen=True)
class FleetHealth:
    healthy: bool
    problems: tuple[str, ...]  # why it is unhealthy
    warnings: tuple[str, ...]  # worth a look, not failing
    query: FleetQuery
    #: the supervisors listed: of those the query selects (none stopped), up
    #: to its limit, with their children that are not stopped
    supervisors: tuple[FleetSnapshot, ...]
    fresh_supervisors: int
    fresh_children: int
    #: the supervisors the query selects, fresh or stale, listed or not
    total_supervisors: int

    @property
    def status(self) -> str:
        return HEALTHY if self.healthy else UNHEALTHY

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "filters": {"host": self.query.host, "queue": self.query.queue},
            "min_children": self.query.min_children,
            "fresh_supervisors": self.fresh_supervisors,
            "fresh_children": self.fresh_children,
            "supervisors_total": self.total_supervisors,
            "supervisors_listed": len(self.supervisors),
            "limit": self.query.limit,
            "supervisors": [_supervisor_entry(s) for s in self.supervisors],
        }


def fleet_health(
    fleet: Iterable[FleetSnapshot], query: FleetQuery | None = None
) -> FleetHealth:
    """Judge the fleet as the fleet table shows it (``snapshot.from_rows``).

    Unhealthy when, among the supervisors the query selects: none is fresh;
    their fresh children (idle or busy, heartbeat within their supervisor's
    stalled timeout) are fewer than ``min_children``; or a fresh one is in a
    crash loop. Stopped supervisors and children are left out of the listing,
    and it holds up to ``query.limit`` supervisors (``pick_listed``).
    """
    query = query or FleetQuery()
    supervisors: list[FleetSnapshot] = []
    fresh_children = 0
    for listed in fleet:
        if listed.phase == "stopped" or not query.matches(listed):
            continue
        supervisor = dataclasses.replace(
            listed,
            children=tuple(c for c in listed.children if c.state != "stopped"),
        )
        supervisors.append(supervisor)
        fresh_children += sum(counts(supervisor, c) for c in supervisor.children)
    fresh = [s for s in supervisors if is_fresh(s)]
    crashes = [(s.pid, s.host) for s in fresh if s.crash_looping]
    stale = [(s.pid, s.host, s.heartbeat_age) for s in supervisors if not is_fresh(s)]
    return verdict(
        query,
        len(fresh),
        fresh_children,
        crashes,
        stale,
        pick_listed(supervisors, query.limit),
        total=len(supervisors),
    )


def verdict(
    query: FleetQuery,
    fresh_supervisors: int,
    fresh_children: int,
    crash_loops: Iterable[tuple[int, str]],
    stale: Iterable[tuple[int, str, float]],
    supervisors: Sequence[FleetSnapshot] = (),
    *,
    total: int,
) -> FleetHealth:
    """The verdict from the counts, the (pid, host) of fresh supervisors in a
    crash loop and the (pid, host, heartbeat age) of stale ones; ``total``
    supervisors selected, of which ``supervisors`` are listed."""
    problems: list[str] = []
    if not fresh_supervisors:
        problems.append("no fresh supervisor" + _scope(query))
    if fresh_children < query.min_children:
        problems.append(
            f"{fresh_children} fresh child(ren), fewer than min_children="
            f"{query.min_children}"
        )
    problems.extend(
        f"supervisor pid {p} on {h} is in a crash loop" for p, h in crash_loops
    )
    # Stale ones are shown, not failed on by themselves: their jobs go back to
    # the queue through the others' sweeps, and min_children counts the rest.
    warnings = [
        f"supervisor pid {p} on {h} has sent no heartbeat for {age:.0f} s"
        for p, h, age in stale
    ]
    return FleetHealth(
        healthy=not problems,
        problems=tuple(problems),
        warnings=tuple(warnings),
        query=query,
        supervisors=tuple(supervisors),
        fresh_supervisors=fresh_supervisors,
        fresh_children=fresh_children,
        total_supervisors=total,
    )


def _scope(query: FleetQuery) -> str:
    parts = []
    if query.host is not None:
        parts.append(f"host={query.host}")
    if query.queue is not None:
        parts.append(f"queue={query.queue}")
    return f" ({', '.join(parts)})" if parts else ""
