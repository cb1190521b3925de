"""plain_app's app and tasks, with a log handler that writes one JSON object
per record, carrying its ``extra`` fields: tests read the ``action`` of events
from the fleet's output instead of their wording."""

from __future__ import annotations

import json
import logging
import sys

from .plain_app import app  # noqa: F401 - the tasks come with it

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        data.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def events(log: str) -> list[dict]:
    """The records of a fleet's output that this handler wrote."""
    found = []
    for line in log.splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(JsonLines())
logging.getLogger().addHandler(_handler)
logging.getLogger().setLevel(logging.INFO)
