"""Pools: several sets of children under one supervisor, each with its own
queues and per-child options (issue 24).

A pool's configuration is a whole ``PreforkConfig`` whose per-child options
(``POOL_OPTIONS``) are the pool's own and whose host-wide options are the
host's: the supervisor's parts that act on one pool read it as they read the
single configuration of a one-pool fleet, so none of them needs to know that
other pools exist.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import PreforkConfig

#: the name of the one pool built from the top-level options when no
#: ``pools`` are configured
DEFAULT_POOL = "default"

#: options a pool may set for its own children; every other option is the
#: host's (health port, heartbeat, stalled and graceful timeouts, hooks, logs)
POOL_OPTIONS = frozenset(
    {
        "queues",
        "concurrency",
        "child_concurrency",
        "autoscale",
        "autoscale_cooldown",
        "job_timeout",
        "task_timeouts",
        "soft_job_timeout",
        "task_soft_timeouts",
        "max_jobs_per_child",
        "max_jobs_jitter",
        "max_memory_per_child",
        "child_timeout",
        "fetch_job_polling_interval",
        "abort_job_polling_interval",
        "delete_jobs",
        "listen_notify",
    }
)


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    """One pool: its name and its configuration (the host's, with the pool's
    per-child options)."""

    name: str
    config: PreforkConfig


def pools_of(config: PreforkConfig) -> tuple[PoolSpec, ...]:
    """The pools of a configuration, in their configured order: one pool named
    ``default`` built from the top-level options when none are configured."""
    return config.pools or (PoolSpec(DEFAULT_POOL, config),)


def serves(queues: tuple[str, ...] | None, queue: str) -> bool:
    """Whether children of ``queues`` (``None``: every queue) run ``queue``."""
    return queues is None or queue in queues
