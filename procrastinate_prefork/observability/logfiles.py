"""Reopen log files on SIGUSR1, as log rotation expects.

``logrotate`` (and its habit of sending SIGUSR1, taken from gunicorn and
nginx) renames a log file; a process keeps writing to the renamed file until
it opens the path again. Each ``logging.FileHandler`` in append mode gets
its stream closed here and reopens the path at its next record.
"""

from __future__ import annotations

import logging


def _handlers() -> list[logging.Handler]:
    loggers = [
        logging.getLogger(),
        *(
            item
            for item in logging.Logger.manager.loggerDict.values()
            if isinstance(item, logging.Logger)
        ),
    ]
    seen: dict[int, logging.Handler] = {}
    for logger in loggers:
        for handler in logger.handlers:
            seen[id(handler)] = handler
    return list(seen.values())


def reopen() -> int:
    """Flush every handler; reopen the files. Returns how many were reopened."""
    reopened = 0
    for handler in _handlers():
        handler.acquire()
        try:
            handler.flush()
            if isinstance(handler, logging.FileHandler) and handler.mode == "a":
                if handler.stream is not None:
                    handler.stream.close()
                    # FileHandler.emit opens the path again while stream is None
                    handler.stream = None
                reopened += 1
        except (OSError, ValueError):  # a broken stream: reopening fixes it
            pass
        finally:
            handler.release()
    return reopened
