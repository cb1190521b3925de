"""The plain test app plus what the health tests need: a task whose arguments
hold a secret, and child-start hooks that make children slow to boot or die
at once (``--on-child-start tests.apps.health_app.slow_start``)."""

from __future__ import annotations

import os
import time

import procrastinate

from .plain_app import _mark, app

__all__ = ["app"]


@app.task(name="secret_sleep", pass_context=True)
def secret_sleep(
    context: procrastinate.JobContext, seconds: float = 30, token: str = ""
) -> None:
    _mark(context, "start")
    time.sleep(seconds)
    _mark(context, "end")


def slow_start(slot: int, pid: int) -> None:
    """Children take $PREFORK_TEST_SLOW_START seconds (default 3) to boot."""
    time.sleep(float(os.environ.get("PREFORK_TEST_SLOW_START", "3")))


def crash_on_start(slot: int, pid: int) -> None:
    raise RuntimeError("this child cannot start (test hook)")
