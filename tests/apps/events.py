"""Structured log events of a fleet, for the tests to assert on.

A handler on the ``procrastinate_prefork`` logger (not the root: the
supervisor still adds its own stderr handler) writes one JSON line per record
that carries an ``action``, with its extra fields, to
``$PREFORK_TEST_RESULTS/events.jsonl``. Children inherit it at the fork; each
line is one ``write`` in append mode, so processes do not mix lines."""

from __future__ import annotations

import json
import logging
import os

_STANDARD = set(vars(logging.makeLogRecord({})))


class _EventHandler(logging.Handler):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        if not hasattr(record, "action"):
            return
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        # ``pid`` is the record's own field when it has one (a child's pid
        # logged by the supervisor); the emitting process is ``process``.
        fields.update(process=record.process, level=record.levelname)
        fields.setdefault("pid", record.process)
        line = json.dumps(fields, default=str) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def install(logger: logging.Logger | None = None) -> None:
    """On ``procrastinate_prefork``'s logger, or the one given."""
    results = os.environ.get("PREFORK_TEST_RESULTS")
    if not results:
        return
    logger = logger or logging.getLogger("procrastinate_prefork")
    if not any(isinstance(h, _EventHandler) for h in logger.handlers):
        logger.addHandler(_EventHandler(os.path.join(results, "events.jsonl")))
