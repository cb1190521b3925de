"""Autoscale: once a second, the backlog of the pool's queues and its
children's states decide whether it grows or shrinks by one.

It owns its clocks (the next look, the start of the quiet spell); it is
given the database session and the scoreboard, and the pool to resize when
it looks (``Pool.converge`` then forks or retires)."""

from __future__ import annotations

from ..child.scoreboard import Scoreboard, State
from ..config import PreforkConfig
from ..fleet import table as fleet
from . import db as db_module
from . import policy
from .pool import Pool

LOOK_EVERY = 1.0  # seconds between two looks


class Autoscaler:
    def __init__(
        self,
        config: PreforkConfig,
        db: db_module.SupervisorDB,
        scoreboard: Scoreboard,
        now: float,
    ):
        self.config = config
        self.db = db
        self.scoreboard = scoreboard
        self.next_look: float = 0.0
        self.quiet_since: float = now
        #: the last count of runnable jobs and when (the poller shares it)
        self.backlog: int | None = None
        self.counted_at: float | None = None
        self.period = LOOK_EVERY

    def look(self, pool: Pool, now: float) -> None:
        if self.config.autoscale is None:
            return
        if now < self.next_look:
            return
        self.next_look = now + self.period

        backlog = self.db.run(
            lambda conn: fleet.count_runnable(conn, self.config.queues)
        )
        if backlog is None:
            return
        self.backlog, self.counted_at = backlog, now
        views = [
            self.scoreboard.read(c.slot)
            for c in pool.children.values()
            if not c.retiring
        ]
        if backlog or any(v.state is State.BUSY for v in views):
            self.quiet_since = now
        low, high = self.config.autoscale
        delta = policy.autoscale_delta(
            current=pool.target,
            low=low,
            high=high,
            backlog=backlog,
            idle=sum(v.state is State.IDLE for v in views),
            quiet_for=now - self.quiet_since,
            cooldown=self.config.autoscale_cooldown,
        )
        if delta > 0:
            pool.grow(delta, why=f"autoscale ({backlog} jobs waiting)")
        elif delta < 0:
            pool.shrink(why="autoscale (idle)", only_idle=True)
            self.quiet_since = now  # one child per cool-down
