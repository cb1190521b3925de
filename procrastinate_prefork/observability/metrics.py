"""Prometheus metrics: totals kept by the supervisor, served on the probe port.

The supervisor keeps every counter itself (``Totals``), from its children's
finished-job rings, their exits and its own recoveries: they survive a
child's death and are never counted twice. A scrape builds the text from
those totals and a fleet snapshot, with a registry of its own: no database
query, nothing global. ``prometheus-client`` is an optional extra; without
it /metrics answers 404 with a hint.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..child.jobring import OTHER, Finished, JobRing
from ..supervisor import policy

if TYPE_CHECKING:
    from ..fleet.snapshot import FleetSnapshot

logger = logging.getLogger("procrastinate_prefork.metrics")

HINT = "metrics need prometheus-client: pip install 'procrastinate-prefork[metrics]'"
PREFIX = "procrastinate_prefork"
#: seconds; jobs run from milliseconds to hours
BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
#: --metrics-label-limit's default
LABEL_LIMIT = 200
#: minutes of finished-job counts kept (and charted by the live page)
MINUTES_KEPT = 15
CHILD_STATES = ("starting", "idle", "busy", "retiring")
#: a snapshot's child state -> the metric's
_STATE_OF = {"draining": "retiring", "stopped": "retiring"}


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether prometheus-client can be imported (asked once: a failed
    import searches the path each time)."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def exit_cause(
    code: int | None,
    signum: int | None,
    *,
    timed_out: bool,
    wedged: bool,
    killed: bool,
    retiring: bool,
) -> str:
    """The ``cause`` label of a child's exit: a few values, unlike log texts.
    What the supervisor did comes first: its SIGKILL explains the signal."""
    if timed_out:
        return "time_limit"
    if wedged:
        return "wedged"
    if killed:
        return "killed"
    if code == policy.EXIT_RECYCLE:
        return "recycled"
    if retiring:
        return "retired"
    return "signal" if signum is not None else "exit"


@dataclasses.dataclass
class Histogram:
    buckets: list[int] = dataclasses.field(default_factory=lambda: [0] * len(BUCKETS))
    count: int = 0
    total: float = 0.0

    def observe(self, value: float, count: int = 1, total: float | None = None) -> None:
        """``count`` observations in ``value``'s bucket, ``total`` in all."""
        self.count += count
        self.total += value * count if total is None else total
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.buckets[i] += count


@dataclasses.dataclass
class Totals:
    """Everything the supervisor counts.

    Whoever defers a job chooses its queue name, and its task name if the
    app does not know the task: series are kept for at most ``label_limit``
    (queue, task) pairs, the first seen; later pairs are counted under
    (``OTHER``, ``OTHER``), so that neither the scrape nor the supervisor's
    memory grows with the names deferred."""

    label_limit: int = LABEL_LIMIT
    jobs: dict[tuple[str, str, str], int] = dataclasses.field(default_factory=dict)
    durations: dict[tuple[str, str], Histogram] = dataclasses.field(
        default_factory=dict
    )
    exits: dict[str, int] = dataclasses.field(default_factory=dict)
    lost_records: int = 0
    #: (queue, status) -> jobs, as last read from the database (None: never)
    queue_jobs: dict[tuple[str, str], int] | None = None
    #: when they were counted (``wall`` clock): one supervisor counts for all
    queue_jobs_counted_at: float = 0.0
    #: the (queue, task) pairs that have series of their own
    pairs: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    #: metrics whose label limit was reached (logged once each)
    capped: set[str] = dataclasses.field(default_factory=set)

    def _labels(self, queue: str, task: str) -> tuple[str, str]:
        pair = (queue, task)
        if pair in self.pairs:
            return pair
        if len(self.pairs) < self.label_limit and pair != (OTHER, OTHER):
            self.pairs.add(pair)
            return pair
        self._capped(f"{PREFIX}_jobs_total")
        return (OTHER, OTHER)

    def _capped(self, metric: str) -> None:
        if metric in self.capped:
            return
        self.capped.add(metric)
        logger.warning(
            "Metric %s reached --metrics-label-limit %s: further label values "
            "are counted under %s",
            metric,
            self.label_limit,
            OTHER,
            extra={
                "action": "metrics_label_limit",
                "metric": metric,
                "limit": self.label_limit,
            },
        )

    #: jobs finished by minute (unix time // 60), the last MINUTES_KEPT only:
    #: the live page's chart, written with each heartbeat
    per_minute: dict[int, int] = dataclasses.field(default_factory=dict)
    #: the wall clock (the minutes of several hosts are summed)
    wall: Callable[[], float] = time.time

    def job(self, queue: str, task: str, outcome: str, count: int = 1) -> None:
        key = (*self._labels(queue, task), outcome)
        self.jobs[key] = self.jobs.get(key, 0) + count

    def finished(self, record: Finished) -> None:
        self.job(record.queue, record.task, record.outcome.name.lower(), record.count)
        minute = int(self.wall() // 60)
        self.per_minute[minute] = self.per_minute.get(minute, 0) + record.count
        for old in [m for m in self.per_minute if m <= minute - MINUTES_KEPT]:
            del self.per_minute[old]
        if record.duration is not None:  # None: the jobs never ran
            key = self._labels(record.queue, record.task)
            self.durations.setdefault(key, Histogram()).observe(
                record.duration, record.count, record.total
            )

    def exited(self, cause: str) -> None:
        self.exits[cause] = self.exits.get(cause, 0) + 1

    def read_queue_depth(
        self, rows: Iterable[tuple[str, str, int]], age: float = 0.0
    ) -> None:
        """Keep the ``queue_jobs`` rows just read, counted ``age`` seconds
        ago, capped like the jobs."""
        counts, capped = queue_counts(rows, self.label_limit)
        if capped:
            self._capped(f"{PREFIX}_queue_jobs")
        self.queue_jobs = counts
        self.queue_jobs_counted_at = self.wall() - age


def _families(snapshot: FleetSnapshot, totals: Totals) -> Iterator[Any]:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    # With several pools, the per-child series carry a ``pool`` label (a
    # fleet without pools keeps the series it always had).
    pools = [pool.name for pool in snapshot.pools] if len(snapshot.pools) > 1 else []
    by_pool = ["pool"] if pools else []
    children = GaugeMetricFamily(
        f"{PREFIX}_children", "Children by state", labels=[*by_pool, "state"]
    )
    names: list[str | None] = [*pools] or [None]
    for name in names:
        states = dict.fromkeys(CHILD_STATES, 0)
        for child in snapshot.children:
            if name is None or child.pool == name:
                state = _STATE_OF.get(child.state, child.state)
                states[state] = states.get(state, 0) + 1
        for state, count in states.items():
            children.add_metric([*([name] if name else []), state], count)
    yield children
    target = GaugeMetricFamily(
        f"{PREFIX}_children_target",
        "Children the supervisor means to run",
        labels=by_pool,
    )
    for pool in snapshot.pools if pools else []:
        target.add_metric([pool.name], pool.concurrency)
    if not pools:
        target.add_metric([], snapshot.concurrency)
    yield target
    exits = CounterMetricFamily(
        f"{PREFIX}_child_exits", "Children's exits", labels=["cause"]
    )
    for cause, count in sorted(totals.exits.items()):
        exits.add_metric([cause], count)
    yield exits
    rss = GaugeMetricFamily(
        f"{PREFIX}_child_rss_bytes",
        "Resident memory of each child",
        labels=[*by_pool, "slot"],
    )
    for child in snapshot.children:
        if child.rss_bytes:
            rss.add_metric(
                [*([child.pool] if pools else []), str(child.slot)], child.rss_bytes
            )
    yield rss
    yield GaugeMetricFamily(
        f"{PREFIX}_database_up",
        "1 while the supervisor's database session works",
        value=1 if snapshot.database_up else 0,
    )
    jobs = CounterMetricFamily(
        f"{PREFIX}_jobs", "Jobs ended, by outcome", labels=["queue", "task", "outcome"]
    )
    for job_labels, count in sorted(totals.jobs.items()):
        jobs.add_metric(list(job_labels), count)
    yield jobs
    durations = HistogramMetricFamily(
        f"{PREFIX}_job_duration_seconds",
        "Time jobs ran in a child",
        labels=["queue", "task"],
    )
    for (queue, task), hist in sorted(totals.durations.items()):
        buckets = [
            (str(float(b)), n) for b, n in zip(BUCKETS, hist.buckets, strict=True)
        ]
        buckets.append(("+Inf", hist.count))
        durations.add_metric([queue, task], buckets, hist.total)
    yield durations
    lost = CounterMetricFamily(
        f"{PREFIX}_job_records_lost",
        "Finished jobs a child held, not yet handed to its supervisor, when it died",
        value=totals.lost_records,
    )
    yield lost
    if totals.queue_jobs is not None:
        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_jobs",
            "Jobs in the database by queue and status",
            labels=["queue", "status"],
        )
        for (queue, status), count in sorted(totals.queue_jobs.items()):
            depth.add_metric([queue, status], count)
        yield depth
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_jobs_age_seconds",
            "Seconds since queue_jobs was counted (by one supervisor of the fleet)",
            value=max(0.0, totals.wall() - totals.queue_jobs_counted_at),
        )


class _Collector:
    def __init__(self, snapshot: FleetSnapshot, totals: Totals):
        self.snapshot = snapshot
        self.totals = totals

    def collect(self) -> Iterator[Any]:
        return _families(self.snapshot, self.totals)


def render(snapshot: FleetSnapshot, totals: Totals) -> str:
    """The Prometheus text exposition of ``snapshot`` and ``totals``."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot, totals))
    return generate_latest(registry).decode()


def drain(ring: JobRing, slot: int, totals: Totals) -> None:
    """Count the jobs ``slot``'s child finished since the last call."""
    records, lost = ring.read(slot)
    totals.lost_records += lost
    for record in records:
        totals.finished(record)


def drain_dead(ring: JobRing, slot: int, totals: Totals) -> None:
    """Count the last jobs of ``slot``'s child, which has exited, and those
    it still held outside its ring (lost: it died before it could hand them
    over); then ready the slot's ring for the next child."""
    drain(ring, slot, totals)
    held = ring.held(slot)
    if held:
        totals.lost_records += held
        logger.warning(
            "Child in slot %s exited holding %d finished job(s) its supervisor "
            "had no room for yet: not in jobs_total, counted in "
            "job_records_lost_total",
            slot,
            held,
            extra={"action": "job_records_lost", "slot": slot, "jobs": held},
        )
    ring.clear(slot)


def queue_counts(
    rows: Iterable[tuple[str, str, int]], limit: int = LABEL_LIMIT
) -> tuple[dict[tuple[str, str], int], bool]:
    """``(queue, status, count)`` rows -> ``{(queue, status): count}``, with
    a zero for each status a queue seen has no job in, and whether some
    queues were merged: the ``limit`` queues with the most jobs keep their
    name (the value is read afresh each time: no name is kept for good), the
    others are summed under ``OTHER``."""
    by_queue: dict[str, dict[str, int]] = {}
    for queue, status, count in rows:
        by_queue.setdefault(queue, {})[status] = int(count)
    ranked = sorted(by_queue, key=lambda q: (-sum(by_queue[q].values()), q))
    named = set(ranked[:limit]) - {OTHER}
    counts: dict[tuple[str, str], int] = {}
    for queue, statuses in by_queue.items():
        label = queue if queue in named else OTHER
        for status in dict.fromkeys(("todo", "doing", *statuses)):
            key = (label, status)
            counts[key] = counts.get(key, 0) + statuses.get(status, 0)
    return counts, any(q not in named and q != OTHER for q in by_queue)
