"""The same work for Celery's prefork pool (Redis broker, acks_late,
prefetch 1), for the "what users would pick instead" comparison.

    celery -A benchmarks.celery_app worker -P prefork -c 2

Each pool process records its first task start, last task end and task count
in ``$BENCH_CELERY_STATS/<pid>`` (one small overwrite per task), the harness's
equivalent of procrastinate's ``procrastinate_events`` timestamps.
"""

from __future__ import annotations

import os
import time

from celery import Celery, signals

from .work import cpu_task

app = Celery(
    "bench", broker=os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6390/0")
)
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
)


@app.task(name="cpu")
def cpu(iterations: int) -> None:
    cpu_task(iterations)


@app.task(name="noop_sync")
def noop_sync() -> None:
    return None


@app.task(name="sleep")
def sleep(ms: float = 50) -> None:
    time.sleep(ms / 1000)


class _Stats:
    pid = 0
    fd = -1
    count = 0
    first = 0.0
    last = 0.0


def _stats_fd() -> int:
    if _Stats.pid != os.getpid():
        _Stats.pid = os.getpid()
        _Stats.count, _Stats.first, _Stats.last = 0, 0.0, 0.0
        directory = os.environ.get("BENCH_CELERY_STATS")
        _Stats.fd = (
            os.open(
                os.path.join(directory, str(_Stats.pid)),
                os.O_WRONLY | os.O_CREAT,
                0o644,
            )
            if directory
            else -1
        )
    return _Stats.fd


@signals.task_prerun.connect
def _task_started(**_: object) -> None:
    _stats_fd()
    if not _Stats.first:
        _Stats.first = time.time()


@signals.task_postrun.connect
def _task_ended(**_: object) -> None:
    fd = _stats_fd()
    _Stats.count += 1
    _Stats.last = time.time()
    if fd >= 0:
        line = f"{_Stats.count} {_Stats.first!r} {_Stats.last!r}\n".ljust(64)
        os.pwrite(fd, line.encode(), 0)
