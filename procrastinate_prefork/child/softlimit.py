"""Soft time limits, enforced by each child on its own running jobs.

Past its soft limit a job gets ``SoftTimeLimitExceeded`` inside its task,
which may catch it to clean up; the child lives on. The supervisor's hard
limit still applies afterwards.

* A sync task runs in a thread of the worker's executor: the exception is
  scheduled in that thread with ``PyThreadState_SetAsyncExc`` and raised at
  its next Python instruction. A blocking C call (``time.sleep``, a socket
  read, a C extension's loop) delays it until the call returns.
* An async task's job is cancelled as procrastinate cancels it on abort, and
  the ``CancelledError`` is replaced by ``SoftTimeLimitExceeded`` on its way
  into the task's coroutine: the task sees the exception at the await it was
  suspended on. Sub-tasks it awaits (``gather``, ``wait_for``'s inner task)
  are cancelled and see ``CancelledError``, as on any cancellation.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
from collections.abc import Awaitable, Callable, Generator
from typing import Any

logger = logging.getLogger("procrastinate_prefork.child")


class SoftTimeLimitExceeded(Exception):
    """Raised inside a task that ran past its soft time limit
    (``--soft-job-timeout``, ``--task-soft-timeout``)."""

    def __init__(self, *args: Any) -> None:
        # raised by class from another thread, hence no arguments then
        super().__init__(*(args or ("the job ran past its soft time limit",)))


def _raise_in_thread(ident: int, exc_type: type[BaseException] | None) -> None:
    """Schedule ``exc_type`` in thread ``ident`` (None drops a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc_type) if exc_type else None
    )


class SoftLimits:
    """Timers on the child's event loop, one per running job with a limit,
    and the task middlewares that know where each job runs."""

    def __init__(self, limit_for: Callable[[str | None], float | None]):
        self._limit_for = limit_for
        self._lock = threading.Lock()  # the loop vs. the tasks' threads
        self._threads: dict[int, int] = {}  # job id -> its sync task's thread
        self._tasks: dict[int, asyncio.Task[Any]] = {}  # job id -> its async job
        self._fired: set[int] = set()  # past the limit, not yet delivered
        self._timers: dict[int, asyncio.TimerHandle] = {}

    def job_started(self, job_id: int, task_name: str) -> None:
        """On the loop, where the hard limit's clock starts too."""
        limit = self._limit_for(task_name)
        if limit is not None:
            self._timers[job_id] = asyncio.get_running_loop().call_later(
                limit, self._fire, job_id, task_name, limit
            )

    def job_ended(self, job_id: int) -> None:
        timer = self._timers.pop(job_id, None)
        if timer is not None:
            timer.cancel()
        with self._lock:
            self._fired.discard(job_id)
            self._threads.pop(job_id, None)
            self._tasks.pop(job_id, None)

    def _fire(self, job_id: int, task_name: str, limit: float) -> None:
        self._timers.pop(job_id, None)
        logger.warning(
            "Job %s (%s) passed its soft time limit (%g s): SoftTimeLimitExceeded "
            "raised in it",
            job_id,
            task_name,
            limit,
            extra={
                "action": "soft_time_limit",
                "job_id": job_id,
                "task_name": task_name,
                "limit": limit,
            },
        )
        with self._lock:
            self._fired.add(job_id)
            ident = self._threads.get(job_id)
            if ident is not None:
                _raise_in_thread(ident, SoftTimeLimitExceeded)
            task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
        # neither: the task has not started yet and raises when it does

    def _take(self, job_id: int) -> bool:
        with self._lock:
            fired = job_id in self._fired
            self._fired.discard(job_id)
            return fired

    def sync_middleware(
        self, call_next: Callable[[], Any], context: Any, worker: Any
    ) -> Any:
        """A task middleware of sync tasks: runs in the task's thread."""
        job_id = context.job.id
        with self._lock:
            if job_id in self._fired:
                self._fired.discard(job_id)
                raise SoftTimeLimitExceeded()
            self._threads[job_id] = threading.get_ident()
        try:
            return call_next()
        finally:
            with self._lock:
                self._threads.pop(job_id, None)
                # raised already, or still pending: it must not outlive the task
                # and hit the executor's thread between two jobs
                if job_id in self._fired:
                    self._fired.discard(job_id)
                    _raise_in_thread(threading.get_ident(), None)

    async def async_middleware(
        self, call_next: Callable[[], Awaitable[Any]], context: Any, worker: Any
    ) -> Any:
        """A task middleware of async tasks: runs in the job's asyncio task."""
        job_id = context.job.id
        if self._take(job_id):
            raise SoftTimeLimitExceeded()
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - middleware runs inside a task
        with self._lock:
            self._tasks[job_id] = task
        try:
            return await _Converting(call_next(), lambda: self._take(job_id), task)
        finally:
            with self._lock:
                self._tasks.pop(job_id, None)


class _Converting:
    """Awaits ``awaitable`` step by step, so that a cancellation caused by
    the soft limit reaches it as ``SoftTimeLimitExceeded`` (and is taken
    back from the task's count of cancellations, for ``asyncio.timeout``
    and task groups); any other cancellation goes through unchanged."""

    def __init__(
        self,
        awaitable: Awaitable[Any],
        is_soft_limit: Callable[[], bool],
        task: asyncio.Task[Any],
    ):
        self._inner = awaitable.__await__()
        self._is_soft_limit = is_soft_limit
        self._task = task

    def __await__(self) -> Generator[Any, Any, Any]:
        inner: Any = self._inner
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = inner.send(value) if error is None else inner.throw(error)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                value = yield yielded
            except asyncio.CancelledError as exc:
                error = exc
                if self._is_soft_limit():
                    error = SoftTimeLimitExceeded()
                    uncancel = getattr(self._task, "uncancel", None)  # 3.11+
                    if uncancel is not None:
                        uncancel()
            except GeneratorExit:
                inner.close()
                raise
            except BaseException as exc:  # handed to the task
                error = exc
