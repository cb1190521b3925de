"""The plain test app, with every log record written as one JSON line to
stderr (``action`` and the other ``extra`` fields included), so that tests
assert on log events rather than on their wording. Logging is configured at
import, before the supervisor's own set-up, which then adds nothing."""

from __future__ import annotations

import json
import logging
import sys

from tests.apps.plain_app import app  # noqa: F401  (the app and its tasks)

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        return json.dumps(
            {
                "level": record.levelname,
                "logger": record.name,
                "pid": record.process,
                "message": record.getMessage(),
                **extra,
            },
            default=str,
        )


_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(JsonLines())
logging.getLogger().addHandler(_handler)
logging.getLogger().setLevel(logging.INFO)
