"""``--log-format json``: one JSON object per line, for log pipelines.

Each object has ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
``pid``, ``role`` (``supervisor`` or ``child``) and ``slot`` (the child's;
in the supervisor's lines, the slot of the child the event is about, if any),
then the record's ``extra`` fields (``action``, ``job_id``...). procrastinate's
own job records also get ``job_id``, ``task_name``, ``queue`` and
``worker_id`` at the top level. An exception is one ``exception`` field: JSON
escapes its line breaks, so a record is always one line. Job arguments are
left out as in the text format (``redact.JobArgsFilter``, from INFO up).

Usable in Django's ``LOGGING`` too:
``{"()": "procrastinate_prefork.jsonlog.JsonFormatter"}``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from typing import Any

#: the value of --log-format that selects this formatter
FORMAT = "json"

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_role: dict[str, Any] = {"role": "supervisor", "slot": None}


def set_process(role: str, slot: int | None, pool: str | None = None) -> None:
    """Called by a child right after the fork; ``pool`` when the child is
    one of several pools' (its records then name it)."""
    _role.update(role=role, slot=slot)
    if pool is not None:
        _role["pool"] = pool


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        job, worker = extra.get("job"), extra.get("worker")
        if isinstance(job, dict):  # procrastinate's records
            for key, source in (
                ("job_id", "id"),
                ("task_name", "task_name"),
                ("queue", "queue"),
            ):
                extra.setdefault(key, job.get(source))
        if isinstance(worker, dict):
            extra.setdefault("worker_id", worker.get("id"))
        data: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(
                record.created, datetime.timezone.utc
            ).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
            **_role,
        }
        if data["role"] == "supervisor" and "slot" in extra:
            data["slot"] = extra.pop("slot")
        if data["role"] == "supervisor" and "pid" in extra:
            extra.setdefault("child_pid", extra.pop("pid"))
        for key, value in extra.items():
            data[key if key not in data else f"extra_{key}"] = value
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str)


def is_active() -> bool:
    return any(
        isinstance(handler.formatter, JsonFormatter)
        for handler in logging.getLogger().handlers
    )


def banner(text: str) -> str:
    """The start banner, as one JSON line when the logs are JSON."""
    if not is_active():
        return text
    record = logging.makeLogRecord(
        {
            "name": "procrastinate_prefork",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": text,
            "process": os.getpid(),
            "action": "banner",
        }
    )
    return JsonFormatter().format(record)
