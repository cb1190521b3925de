"""The pools of one supervisor, taken together: how they are built (each
with its configuration, its name and its own range of scoreboard slots), and
what the loop asks of all of them at once (their children, their next fork,
their queues, readiness, wake-ups routed to the pools serving a queue,
the polls).

Nothing here knows of the supervisor; a fleet without pools has one pool,
named ``default``, built from the top-level options."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence

from ..child import wakepipe
from ..child.scoreboard import Scoreboard
from ..config import PreforkConfig
from ..config.pools import pools_of
from ..fleet.snapshot import union_queues
from . import slots
from .children import Child, Forker
from .db import SupervisorDB
from .poller import Poller
from .pool import SLOTS_PER_POOL, Pool
from .system import System

logger = logging.getLogger("procrastinate_prefork.supervisor")


def scoreboard_for(config: PreforkConfig) -> Scoreboard:
    """Room for every pool's slots, each sized for the most jobs at once of
    any pool."""
    specs = pools_of(config)
    return Scoreboard(
        len(specs) * SLOTS_PER_POOL, max(s.config.child_concurrency for s in specs)
    )


def listen_queues(config: PreforkConfig) -> list[tuple[str, ...] | None]:
    """The queues of the pools whose children are woken by notifications."""
    return [s.config.queues for s in pools_of(config) if s.config.listen_notify]


def build(
    config: PreforkConfig, system: System, scoreboard: Scoreboard, forker: Forker
) -> list[Pool]:
    """The pools of ``config``; each forks its children with ``forker`` given
    the pool's configuration and name."""
    specs = pools_of(config)
    ranges = slots.pool_ranges(len(specs), SLOTS_PER_POOL)
    return [
        Pool(
            spec.config,
            system,
            scoreboard,
            dataclasses.replace(forker, config=spec.config, pool=spec.name),
            name=spec.name,
            slot_range=slot_range,
        )
        for spec, slot_range in zip(specs, ranges, strict=True)
    ]


def start(pools: Iterable[Pool]) -> None:
    for pool in pools:
        pool.start()


def children(pools: Iterable[Pool]) -> list[Child]:
    return [child for pool in pools for child in pool.children.values()]


def concurrency(pools: Iterable[Pool]) -> int:
    return sum(pool.target for pool in pools)


def queues(pools: Iterable[Pool]) -> tuple[str, ...] | None:
    """The queues of all the pools (None: one of them serves every queue)."""
    return union_queues(pool.config.queues for pool in pools)


def next_fork_in(pools: Iterable[Pool], now: float) -> float | None:
    forks = [pool.next_fork_in(now) for pool in pools]
    return min((fork for fork in forks if fork is not None), default=None)


def forward(
    pools: Sequence[Pool], notifications: list[tuple[str, str]], wake: bool
) -> None:
    """Each pool's children get the notifications of the queues it serves
    (pools that listen), and a wake-up if ``wake`` (after a recovery, a
    reconnection): every child has a wake pipe, the supervisor's polls
    use it even without LISTEN."""
    routed = wakepipe.route(notifications, [p.config.queues for p in pools])
    for pool, received in zip(pools, routed, strict=True):
        heard = received if pool.config.listen_notify else []
        lines = wakepipe.to_forward(heard, wake)
        if lines:
            pool.wake(wakepipe.encode(lines))


def poll(
    pools: Sequence[Pool],
    pollers: Sequence[Poller],
    now: float,
    scoreboard: Scoreboard,
    db: SupervisorDB,
) -> None:
    """Each pool's poll, when due (``poller.Poller``); then, if the session
    is up, the time of these polls on the scoreboard: while it is fresh the
    children leave their own timer's fetches to the supervisor."""
    for pool, poller in zip(pools, pollers, strict=True):
        poller.poll(pool, now)
    if db.is_up:  # after this turn's polls: one may have found it down
        scoreboard.set_polled(now)


def log_ready(pools: Sequence[Pool]) -> None:
    """Once per pool when its children are all ready (of several pools), and
    once for the fleet when the last pool is."""
    became = [p for p in pools if not p.ready_logged and p.ready()]
    for pool in became:
        pool.ready_logged = True
        if len(pools) > 1:
            logger.info(
                "All %d children of pool %s ready",
                pool.target,
                pool.name,
                extra={"action": "pool_ready", "pool": pool.name},
            )
    if became and all(p.ready_logged for p in pools):
        logger.info(
            "All %d children ready",
            sum(p.target for p in pools),
            extra={"action": "fleet_ready"},
        )
