"""The chaos run's pools (issue 24): hosts that run two pools under one
supervisor, so that every attack also hits a two-pool fleet.

With ``ChaosConfig.pools``, the ``chaos_async`` jobs go to their own queue
(``ASYNC_QUEUE``), and the hosts of the roles in ``POOL_ROLES`` (the SIGHUP
and log-pipe host: SIGHUP burst, SIGTTOU/SIGTTIN; the timed and black-holed
host: per-pool time limits, the database outage's restart loop, the
supervisor kills) run a pool ``main`` for the ``default`` queue, one job per
child, and a pool ``io`` for the async queue (and the ``timed`` one where the
limits are enforced), two jobs per child. The one-pool hosts serve the async
queue too: every queue keeps a fleet whichever supervisor is down.

A pools host's children are the pools' sum, ``ChaosConfig.children``, and each
pool has at least two, so that a SIGTTOU (one child fewer in every pool that
has more than one) and a SIGTTIN (one more in every pool) cancel out.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

ASYNC_QUEUE = "io"
#: hosts playing one of these roles run pools (see ChaosConfig.roles)
POOL_ROLES = frozenset({"sighup", "log-pipe", "timed", "black-hole"})
#: a pool of fewer children would make SIGTTOU and SIGTTIN not cancel out
MIN_POOL_CHILDREN = 2


@dataclasses.dataclass(frozen=True)
class PoolPlan:
    """One pool of a host (its ``PROCRASTINATE_PREFORK["pools"]`` entry)."""

    name: str
    queues: tuple[str, ...]
    children: int
    child_concurrency: int
    task_timeouts: tuple[tuple[str, float], ...] = ()

    def setting(self, child_timeout: float, polling_interval: float) -> dict[str, Any]:
        """Its entry in ``$PREFORK_TEST_POOLS`` (``tests/pools_main.py``)."""
        return {
            "queues": list(self.queues),
            "concurrency": self.children,
            "child_concurrency": self.child_concurrency,
            "task_timeouts": dict(self.task_timeouts),
            "child_timeout": child_timeout,
            "fetch_job_polling_interval": polling_interval,
        }

    def label(self) -> str:
        """Its queues, children and jobs per child, as in the summary."""
        return f"{','.join(self.queues)}:{self.children}x{self.child_concurrency}"


def host_pools(
    children: int,
    queues: tuple[str, ...],
    child_concurrency: int,
    task_timeouts: tuple[tuple[str, float], ...],
) -> tuple[PoolPlan, ...]:
    """A host's two pools from its one-pool plan, or () when it has too few
    children for two pools of ``MIN_POOL_CHILDREN``. ``queues``: the host's
    (``()`` for every queue: then ``default`` and the async queue)."""
    if children < 2 * MIN_POOL_CHILDREN:
        return ()
    main = children // 2
    io_queues = tuple(q for q in queues if q not in ("default", ASYNC_QUEUE))
    return (
        PoolPlan("main", ("default",), main, 1),
        PoolPlan(
            "io",
            (ASYNC_QUEUE, *io_queues),
            children - main,
            max(2, child_concurrency),
            task_timeouts,
        ),
    )


def size_after_ttou(sizes: Iterable[int]) -> int:
    """The children left once SIGTTOU retired one in every pool of more
    than one."""
    return sum(max(1, size - 1) for size in sizes)


def runs_by_pool(
    events: Iterable[Mapping[str, Any]],
    run_pids: Iterable[int],
    host_of: Mapping[int, str],
) -> dict[str, dict[str, int]]:
    """host -> pool -> runs its children made (``run_pids``: the pid of each
    run), from the supervisors' ``child_started`` records."""
    pool_of = child_pools(events, host_of)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for pid in run_pids:
        if pid in pool_of:
            host, pool = pool_of[pid]
            counts[host][pool] += 1
    return {host: dict(sorted(c.items())) for host, c in sorted(counts.items())}


def child_pools(
    events: Iterable[Mapping[str, Any]], host_of: Mapping[int, str]
) -> dict[int, tuple[str, str]]:
    """child pid -> (host, pool), for the children of the supervisors of
    ``host_of`` (supervisor pid -> host)."""
    return {
        e["pid"]: (host_of[e["process"]], e["pool"])
        for e in events
        if e.get("action") == "child_started" and e.get("process") in host_of
    }


def misrouted(
    runs: Iterable[tuple[int, int, str]],
    pool_of: Mapping[int, tuple[str, str]],
    pools: Mapping[str, tuple[PoolPlan, ...]],
) -> list[str]:
    """Problems: a job (``runs``: job id, pid, queue) run on a pools host by
    a child of a pool that does not serve its queue."""
    problems = []
    for job_id, pid, queue in runs:
        host, pool = pool_of.get(pid, ("", ""))
        plans = {p.name: p for p in pools.get(host, ())}
        if pool in plans and queue not in plans[pool].queues:
            problems.append(
                f"job {job_id} of queue {queue} ran on {host} in pool {pool} "
                f"(queues {','.join(plans[pool].queues)})"
            )
    return problems
