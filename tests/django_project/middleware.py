"""A worker middleware that records every job run.

Installed through ``PROCRASTINATE_WORKER_DEFAULTS`` (so it also proves that
the user's worker defaults reach the children), it leaves a marker file per
run in $PREFORK_TEST_RESULTS, named ``<job id>.<attempt>.<phase>`` and holding
``<pid> <time> <task middleware names>``: the format of
``tests/apps/plain_app.py``, read by ``Fleet.marks``. Imports nothing from
Django: the settings module imports it.
"""

from __future__ import annotations

import os
import time
from typing import Any


def _write(job: Any, phase: str, worker: Any) -> None:
    results = os.environ.get("PREFORK_TEST_RESULTS")
    if not results:
        return
    names = ",".join(
        getattr(mw, "__name__", type(mw).__name__) for mw in worker.task_middleware
    )
    path = os.path.join(results, f"{job.id}.{job.attempts}.{phase}")
    with open(path, "w") as f:
        f.write(f"{os.getpid()} {time.time()} {names or '-'}\n")


async def record_runs(call_next: Any, context: Any, worker: Any) -> Any:
    _write(context.job, "start", worker)
    result = await call_next()
    _write(context.job, "end", worker)
    return result
