"""Verdicts on one supervisor, as pure functions of what it knows of itself
(its snapshot): the probe port's ``/live``, ``/ready`` and ``/status``."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ..supervisor.policy import is_wedged

if TYPE_CHECKING:
    from .snapshot import FleetSnapshot

#: child states that count as able to run jobs
WORKING_STATES = frozenset({"idle", "busy"})


def shown_age(seconds: float) -> float:
    """An age as the fleet document shows it: never negative, to the ms."""
    return round(max(0.0, seconds), 3)


@dataclasses.dataclass(frozen=True)
class Verdict:
    ok: bool
    reasons: tuple[str, ...] = ()


def liveness(facts: FleetSnapshot) -> Verdict:
    """Should the pod be left alive? The loop that answers is running; it
    fails on a crash loop (of every pool), or when every child is wedged (no
    sign of life for ``child_timeout``, so not even the supervisor's SIGKILL
    got rid of them).
    One stuck child, which the supervisor is replacing, does not fail it, nor
    does a database outage (restarting the pod would not help)."""
    reasons = []
    pools = facts.pool_list()
    # One pool's crash loop leaves the others running: a restart would stop
    # them too, so /live fails only when every pool is looping (/ready fails
    # for the looping pool's missing children).
    if all(pool.crash_looping for pool in pools):
        reasons.append("crash loop: children keep dying right after they start")
    children = list(facts.children)
    if children and all(
        is_wedged(c.heartbeat_age, facts.child_timeout) for c in children
    ):
        reasons.append(
            f"all {len(children)} child(ren) wedged (no sign of life for more than "
            f"{facts.child_timeout:g} s)"
        )
    return Verdict(not reasons, tuple(reasons))


def readiness(facts: FleetSnapshot) -> Verdict:
    """Is this supervisor running its full complement of children in every
    pool, each past its bootstrap, with the database answering?"""
    reasons = []
    if facts.phase != "running":
        reasons.append(f"supervisor is {facts.phase}")
    if not facts.database_up:
        reasons.append("database unreachable")
    pools = facts.pool_list()
    for pool in pools:
        if pool.crash_looping and len(pools) > 1:
            reasons.append(f"crash loop in pool {pool.name}")
        ready = sum(
            1
            for c in facts.children
            if c.state in WORKING_STATES and (len(pools) == 1 or c.pool == pool.name)
        )
        if ready < pool.concurrency:
            of = f" of pool {pool.name}" if len(pools) > 1 else ""
            reasons.append(f"{ready} of {pool.concurrency} child(ren){of} ready")
    return Verdict(not reasons, tuple(reasons))


def supervisor_report(facts: FleetSnapshot) -> dict[str, Any]:
    """The ``/status`` document of one supervisor."""
    live, ready = liveness(facts), readiness(facts)
    return {
        "host": facts.host,
        "pid": facts.pid,
        "phase": facts.phase,
        "uptime": shown_age(facts.uptime),
        "queues": list(facts.queues) if facts.queues else None,
        "concurrency": facts.concurrency,
        "crash_loop": facts.crash_looping,
        "database": "up" if facts.database_up else "down",
        "live": live.ok,
        "ready": ready.ok,
        "reasons": [*live.reasons, *ready.reasons],
        "children": [
            {
                "slot": c.slot,
                "pid": c.pid,
                "state": c.state,
                "job_id": c.job_id,
                "task_name": c.task_name,
                "job_age": None if c.job_age is None else round(c.job_age, 3),
                "jobs_done": c.jobs_done,
                "restarts": c.restarts,
                "rss_bytes": c.rss_bytes,
                "heartbeat_age": shown_age(c.heartbeat_age),
                "uptime": shown_age(c.uptime),
                "pool": c.pool,
            }
            for c in sorted(facts.children, key=lambda c: c.slot)
        ],
        "pools": [
            {
                **pool.as_dict(),
                "ready_children": sum(
                    1
                    for c in facts.children
                    if c.pool == pool.name and c.state in WORKING_STATES
                ),
            }
            for pool in facts.pool_list()
        ],
    }
