"""Restart and liveness policy, as pure functions of the facts.

The supervisor loop asks these questions; keeping the answers here (no I/O,
no clock reads) lets the unit tests pin every rule down.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

#: --stalled-timeout's default (health rules use it for rows without one)
STALLED_TIMEOUT = 30.0
#: A child that dies sooner than this after it was forked died "early".
MIN_UPTIME = 5.0
#: Early deaths in a row of one slot that make the fleet "crash-looping".
CRASH_LOOP_THRESHOLD = 3
#: First re-fork delay after an early death; doubles with each further one.
BACKOFF_BASE = 1.0
#: Exit code of a child that recycled itself (max jobs or memory): always
#: replaced, even in one-shot mode, and never a crash.
EXIT_RECYCLE = 75
#: Exit code of a one-shot child whose worker found its queues empty and
#: stopped for that alone: the only exit that ends a one-shot slot. A plain 0
#: says nothing of the queues (a stop asked by SIGTERM, a time limit's, a task
#: calling ``os._exit(0)``); 79 is outside the sysexits range (64-78).
EXIT_QUEUES_EMPTY = 79


@dataclasses.dataclass(frozen=True)
class SlotHistory:
    """What the supervisor remembers of one slot across re-forks."""

    early_deaths: int = 0  # consecutive deaths within MIN_UPTIME of start
    restarts: int = 0


def record_death(
    history: SlotHistory,
    uptime: float,
    clean_exit: bool,
    had_job: bool = False,
    min_uptime: float = MIN_UPTIME,
) -> SlotHistory:
    """The slot's history after its child died ``uptime`` seconds after start.

    A clean exit (recycling, one-shot done) never counts as an early death, nor does
    a death under a job: that job is recovered and capped by the poison-pill
    rule, and backing off would starve the other jobs for the fault of one."""
    early = not clean_exit and not had_job and uptime < min_uptime
    return SlotHistory(
        early_deaths=history.early_deaths + 1 if early else 0,
        restarts=history.restarts + 1,
    )


def restart_delay(
    history: SlotHistory, base: float = BACKOFF_BASE, cap: float = 30.0
) -> float:
    """Seconds to wait before re-forking: none after a child that lived, then
    exponential in the number of early deaths in a row, capped."""
    if history.early_deaths == 0:
        return 0.0
    return min(cap, base * 2.0 ** (history.early_deaths - 1))


def is_crash_looping(
    history: SlotHistory, threshold: int = CRASH_LOOP_THRESHOLD
) -> bool:
    return history.early_deaths >= threshold


def is_wedged(heartbeat_age: float, child_timeout: float) -> bool:
    """A child whose event loop has not touched its slot for ``child_timeout``."""
    return heartbeat_age > child_timeout


#: A supervisor heartbeat that ends later than its interval plus this after
#: the previous one breaks the series: the database or the loop stalled.
STALL_MARGIN = 1.0
#: Time a live host may need, once the database answers again, to reconnect
#: (db.RETRY_MAX) and write a heartbeat.
RECONNECT_ALLOWANCE = 3.0


@dataclasses.dataclass(frozen=True)
class HeartbeatSeries:
    """The supervisor's own successful heartbeats, without a stall between
    them: the time over which other processes had a chance to write theirs.
    Times are monotonic."""

    since: float | None = None  # end of the series' first heartbeat
    last: float | None = None  # end of its latest

    def healthy_for(self, now: float) -> float:
        return 0.0 if self.since is None else max(0.0, now - self.since)


def record_heartbeat(
    series: HeartbeatSeries, ok: bool, ended: float, heartbeat_interval: float
) -> HeartbeatSeries:
    """The series after a heartbeat that ended at ``ended``.

    A failed heartbeat (database down, an error) ends the series; so does one
    that ends too long after the previous one: it waited on a lock, or the
    supervisor itself was stopped, so nobody's heartbeat of that time proves
    anything. The next success starts a new series."""
    if not ok:
        return HeartbeatSeries()
    if series.last is None or ended - series.last > heartbeat_interval + STALL_MARGIN:
        return HeartbeatSeries(since=ended, last=ended)
    return dataclasses.replace(series, last=ended)


def may_take_sweep_turn(
    healthy_for: float, stalled_timeout: float, stock_timeout: float
) -> bool:
    """Whether a supervisor whose heartbeats have run without a gap for
    ``healthy_for`` seconds may claim the fleet's turn to sweep. Not before it
    could judge a worker of its own kind (its own stalled timeout, or the stock
    workers' if shorter): a turn claimed by one that cannot judge anybody yet
    would be lost, and one with a short heartbeat interval that restarts in a
    loop would claim every turn."""
    return healthy_for >= min(stalled_timeout, stock_timeout)


def pick_deferrer(current: int, candidates: Sequence[tuple[int, int]]) -> int:
    """The pid of the child to run procrastinate's periodic deferrer, among
    the ``(slot, pid)`` of the children able to (0 if none): the current one
    as long as it is able to, so that it does not move back and forth; else
    the lowest slot's."""
    if current and any(pid == current for _, pid in candidates):
        return current
    return min(candidates)[1] if candidates else 0


def judgement_slack(heartbeat_interval: float) -> float:
    """Added to another host's declared heartbeat interval to judge it, when
    its declared stalled timeout is shorter: a database stall shorter than our
    own series can see (our interval plus the stall margin) may have held its
    heartbeats back, and after an outage it needs time to reconnect."""
    return heartbeat_interval + STALL_MARGIN + RECONNECT_ALLOWANCE


def is_over_time_limit(job_age: float | None, limit: float | None) -> bool:
    return job_age is not None and limit is not None and job_age > limit


def should_replace(exit_code: int | None, wait: bool, stopping: bool) -> bool:
    """Whether a dead child's slot gets a new child.

    With ``wait=False`` (one-shot) only a child that said it found its queues
    empty has finished its work; one that stopped for any other reason (exit
    0 after a SIGTERM, a recycling, a crash) is replaced as in normal mode."""
    if stopping:
        return False
    return wait or exit_code != EXIT_QUEUES_EMPTY


def describe_exit(status: int) -> tuple[int | None, int | None, str]:
    """(exit code, signal number, human text) from a ``waitpid`` status."""
    import os
    import signal

    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return None, signum, f"killed by {name}"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    return code, None, f"exited with code {code}"


def autoscale_delta(
    *,
    current: int,
    low: int,
    high: int,
    backlog: int,
    idle: int,
    quiet_for: float,
    cooldown: float,
) -> int:
    """How many children to add (> 0) or retire (< 0) now.

    Grow while more runnable jobs wait than idle children can take; shrink by
    one idle child at a time once no job has waited for ``cooldown`` seconds."""
    if current < low:
        return low - current
    if current > high:
        return high - current
    if backlog > idle and current < high:
        return min(high - current, backlog - idle)
    if backlog == 0 and idle > 0 and current > low and quiet_for >= cooldown:
        return -1
    return 0


def recycle_limit(max_jobs: int | None, jitter: int, draw: int) -> int | None:
    """Jobs a child may run before it is recycled; ``draw`` is a random number
    in ``0..jitter`` chosen by the child."""
    if max_jobs is None:
        return None
    return max_jobs + min(max(draw, 0), jitter)


def should_recycle_for_memory(
    rss_mb: float, limit_mb: int | None, baseline_mb: float
) -> bool:
    """Recycle when over the limit, unless the child was already over it when it
    started: a replacement would be too, and would recycle in a loop."""
    if limit_mb is None:
        return False
    return rss_mb > limit_mb and baseline_mb <= limit_mb


#: shortest gap between two writes of the children's running jobs, per host
JOBS_WRITE_GAP = 1.0


@dataclasses.dataclass(frozen=True)
class JobsWritten:
    """What the fleet table shows of the children's running jobs, and when
    the supervisor last wrote them (its monotonic clock)."""

    jobs: object = None
    at: float = float("-inf")


def jobs_write_due(
    written: JobsWritten, jobs: object, now: float, gap: float = JOBS_WRITE_GAP
) -> bool:
    """Whether to write the children's running jobs (``jobs``) now, between
    heartbeats: only when they differ from what the table shows, and at most
    once per ``gap`` (a busy fleet's jobs change many times a second; a
    change within the gap waits for its end, and is then written whatever
    came after it)."""
    return jobs != written.jobs and now - written.at >= gap
