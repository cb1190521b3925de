"""plain_app's app with a periodic task deferred every second, and
procrastinate's own periodic deferrer's events (``wait_next_tick`` each turn
of its loop, ``periodic_task_deferred``...) in events.jsonl: which process
runs a deferrer shows there, whatever our own events say."""

from __future__ import annotations

import logging

import procrastinate

from . import events
from .plain_app import _mark, app

events.install(logging.getLogger("procrastinate.periodic"))
logging.getLogger("procrastinate.periodic").setLevel(logging.DEBUG)


@app.periodic(cron="* * * * * *", periodic_id="every_second")
@app.task(name="tick", pass_context=True)
def tick(context: procrastinate.JobContext, timestamp: int) -> None:
    _mark(context, "start")


__all__ = ["app"]
