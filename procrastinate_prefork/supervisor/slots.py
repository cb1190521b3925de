"""How many children to fork and which to retire, as a pure function.

The supervisor asks ``plan`` on every turn of its loop, whatever happened
since the last one (SIGHUPs, SIGTTIN/SIGTTOU, deaths, children becoming
ready), so the fleet converges to its target from any state: a rolling
restart interrupted by another SIGHUP or by a change of size never leaves
children behind.

The rules:

* children of the current generation that are not retiring, plus the forks
  still pending, make the planned fleet: fork what is missing (when
  ``refill``), drop pending forks and then retire children beyond the target;
* children of older generations hand over to the current one: one of them
  may keep serving for each current child still missing from the ready
  ones; the rest retire, those not ready yet at once (a SIGHUP during a
  hand-over restarts it: the children still booting for the previous one
  serve nothing yet).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence


@dataclasses.dataclass(frozen=True)
class Member:
    """What the plan needs to know of one live child."""

    pid: int
    slot: int
    generation: int
    retiring: bool = False
    ready: bool = False  # its worker is registered (idle or busy)
    busy: bool = False


@dataclasses.dataclass(frozen=True)
class Plan:
    fork: int = 0  # new children of the current generation
    cancel: int = 0  # pending forks to drop
    retire: tuple[int, ...] = ()  # pids of children to retire

    @property
    def empty(self) -> bool:
        return not (self.fork or self.cancel or self.retire)


def plan(
    children: Sequence[Member],
    *,
    target: int,
    generation: int,
    pending: int,
    refill: bool = True,
) -> Plan:
    live = [c for c in children if not c.retiring]
    current = [c for c in live if c.generation == generation]
    old = [c for c in live if c.generation != generation]
    retire: list[int] = []

    planned = len(current) + pending
    fork = max(0, target - planned) if refill else 0
    cancel = min(pending, max(0, planned - target))
    excess = max(0, len(current) - target)
    # The cheapest to lose first: not ready yet, then idle; the highest slot.
    for child in sorted(current, key=lambda c: (c.ready, c.busy, -c.slot))[:excess]:
        retire.append(child.pid)

    ready_current = sum(c.ready and c.pid not in retire for c in current)
    serving = max(0, target - ready_current)
    keep = sorted(
        (c for c in old if c.ready), key=lambda c: (-c.generation, not c.busy, -c.slot)
    )
    kept = {c.pid for c in keep[:serving]}
    # Oldest generation first, idle before busy, so that the kept ones are
    # the freshest and the busy ones get to finish their jobs.
    for child in sorted(old, key=lambda c: (c.generation, c.busy, c.slot)):
        if child.pid not in kept:
            retire.append(child.pid)
    return Plan(fork=fork, cancel=cancel, retire=tuple(retire))


def free_slot(used: Collection[int], *, limit: int, start: int = 0) -> int:
    """The lowest slot from ``start`` and below ``limit`` that no child holds
    nor waits for."""
    return next(slot for slot in range(start, limit) if slot not in used)


def pool_ranges(count: int, per_pool: int) -> list[range]:
    """The scoreboard's slots of each of ``count`` pools: ranges of
    ``per_pool`` slots one after the other, the first from 0 (a fleet of one
    pool numbers its children as it always did). A slot is a child's identity
    in the scoreboard and the fleet table, so no two pools share one."""
    return [range(i * per_pool, (i + 1) * per_pool) for i in range(count)]
