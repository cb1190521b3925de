"""One poller per host: the supervisor looks for runnable jobs on behalf of
its children.

A stock procrastinate worker polls the database with its fetch on a timer,
as a fallback to LISTEN/NOTIFY; N children would poll N times, each with a
fetch whose generic plan can walk other queues' waiting jobs. Here the
supervisor asks once per ``--fetch-job-polling-interval`` per pool, with
one indexed count (stopped at the number of children it could wake) of the
pool's runnable jobs, and wakes that many idle children through their wake
pipes, as a NOTIFY does. It is what finds a scheduled job whose time has
come (no NOTIFY announces it) and every job of a fleet without LISTEN
(``--no-listen-notify``, or a transaction pooler without ``--listen-dsn``).

Each turn its session is up, the supervisor stamps its polls on the
scoreboard; a child's own timer still fires every interval, but its fetch is
skipped while that stamp is fresh (``compat.fetches.fetch_when_needed``).
When the supervisor cannot poll (its session down, the process stopped) the
stamp grows old and after ``config.polls_late_after`` the children poll on
their own again.

A pool that autoscales already counts its runnable jobs every second: the
poller takes that count when it is fresh rather than asking again."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import psycopg

from ..child.scoreboard import Scoreboard
from ..config import PreforkConfig
from ..fleet import queries
from . import db as db_module
from .pool import Pool
from .scaling import Autoscaler

logger = logging.getLogger("procrastinate_prefork.supervisor")


def count_runnable(
    conn: psycopg.Connection, queues: Sequence[str] | None, limit: int
) -> int:
    """Runnable jobs of ``queues`` (every queue: None), counted up to ``limit``."""
    if queues:
        # planned at each call, as fleet.count_runnable: a generic plan
        # cannot tell a busy queue from an empty one
        cursor = conn.execute(
            queries.get("poll_runnable_in_queues"),
            {"queues": list(queues), "limit": limit},
            prepare=False,
        )
    else:
        cursor = conn.execute(queries.get("poll_runnable"), {"limit": limit})
    row = cursor.fetchone()
    return int(row[0]) if row else 0


class Poller:
    """The polls of one pool: its clock, and the autoscaler whose count it
    may share."""

    def __init__(
        self,
        config: PreforkConfig,
        db: db_module.SupervisorDB,
        scoreboard: Scoreboard,
        autoscaler: Autoscaler | None = None,
    ):
        self.config = config
        self.db = db
        self.scoreboard = scoreboard
        self.autoscaler = autoscaler
        self.next_poll: float = 0.0

    @classmethod
    def of(
        cls, scaler: Autoscaler, db: db_module.SupervisorDB, scoreboard: Scoreboard
    ) -> Poller:
        """The poller of an autoscaler's pool, sharing its count if it counts."""
        return cls(
            scaler.config, db, scoreboard, scaler if scaler.config.autoscale else None
        )

    def poll(self, pool: Pool, now: float) -> None:
        # one-shot children never wait for a job: nobody to wake
        if not self.config.wait or now < self.next_poll:
            return
        self.next_poll = now + self.config.fetch_job_polling_interval
        idle = pool.idle_children()
        if not idle:
            return  # a busy child fetches again as soon as its job ends
        runnable = self._shared_count(now)
        if runnable is None:
            queues = self.config.queues
            runnable = self.db.run(lambda c: count_runnable(c, queues, len(idle)))
        if not runnable:
            return
        woken = pool.wake_children(idle[:runnable])
        logger.debug(
            "Poll of pool %s: %d runnable job(s), %d child(ren) woken",
            pool.name,
            runnable,
            len(woken),
            extra={
                "action": "poll_woke",
                "pool": pool.name,
                "runnable": runnable,
                "pids": woken,
            },
        )

    def _shared_count(self, now: float) -> int | None:
        """The autoscaler's count of this turn or the last (it counts once a
        second), if it has one."""
        scaler = self.autoscaler
        if scaler is None or scaler.counted_at is None:
            return None
        if now - scaler.counted_at > scaler.period + 0.5:
            return None
        return scaler.backlog
