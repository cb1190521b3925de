"""Keep job arguments out of the logs at INFO and above, and passwords out
of connection errors.

procrastinate's worker writes ``task[id](arg=value, ...)`` into its INFO
messages ("Starting job ...", "Job ... ended with status ...") and the
arguments into the record's ``job`` extra, where a JSON formatter would print
them. Arguments may hold secrets; a child installs ``JobArgsFilter`` on its
worker's logger so that, from INFO up, the message shows ``task[id](...)``
and the extra has no ``task_kwargs``. DEBUG records keep everything, for
debugging.
"""

from __future__ import annotations

import collections
import logging
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

REDACTED = "..."


def redacted_call_string(job: dict[str, Any]) -> str:
    return f"{job.get('task_name')}[{job.get('id')}]({REDACTED})"


class JobArgsFilter(logging.Filter):
    """Records with a ``job`` extra teach the filter that job's call string;
    from INFO up, every known call string in a message is shortened (some
    messages, e.g. "Waiting for job to finish", carry no ``job`` extra)."""

    MAX_KNOWN = 1024

    def __init__(self) -> None:
        super().__init__()
        # by the job id of the call string (``task[id](``): a message is only
        # compared with the call strings of the job ids it holds, not with
        # every known one (that was most of the filter's cost per job)
        self._known: collections.OrderedDict[str, dict[str, str]] = (
            collections.OrderedDict()
        )

    def filter(self, record: logging.LogRecord) -> bool:
        job = getattr(record, "job", None)
        if isinstance(job, dict) and job.get("call_string"):
            self._learn(job["call_string"], redacted_call_string(job))
        if record.levelno < logging.INFO:
            return True
        if isinstance(job, dict):
            record.job = {
                **job,
                "task_kwargs": REDACTED,
                "call_string": redacted_call_string(job),
            }
        if not self._known:
            return True
        if isinstance(record.msg, str):
            record.msg = self._shorten(record.msg)
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(
                self._shorten(a) if isinstance(a, str) else a for a in args
            )
        return True

    def _learn(self, call_string: str, short: str) -> None:
        key = _job_key(call_string)
        self._known.setdefault(key, {})[call_string] = short
        self._known.move_to_end(key)
        while len(self._known) > self.MAX_KNOWN:
            self._known.popitem(last=False)

    def _shorten(self, text: str) -> str:
        keys = {match.group(1) for match in _CALL_ID.finditer(text)}
        keys.add("")  # call strings without a job id
        for key in keys:
            for call_string, short in self._known.get(key, {}).items():
                if call_string in text:
                    text = text.replace(call_string, short)
        return text


#: ``task_name[42](`` in procrastinate's call strings
_CALL_ID = re.compile(r"\[(\d+)\]\(")


def _job_key(call_string: str) -> str:
    match = _CALL_ID.search(call_string)
    return match.group(1) if match else ""


_FILTER = JobArgsFilter()


def install(worker_name: str | None) -> None:
    """On the loggers procrastinate's worker named ``worker_name`` logs to."""
    names = ["procrastinate.worker"]
    if worker_name:
        names.append(f"procrastinate.worker.{worker_name}")
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


# ``scheme://user:PASSWORD@...`` and ``... password=PASSWORD ...`` (quoted or not)
_URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^:@/]*:([^@]*)@", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def connection_secrets(connection_args: Mapping[str, Any]) -> set[str]:
    """The passwords in a connection's conninfo and keyword arguments, as
    written and decoded: libpq quotes the part of a DSN it cannot parse."""
    conninfo = str(connection_args.get("conninfo") or "")
    found = []
    match = _URL_PASSWORD.match(conninfo)
    if match:
        found += [match.group(1), urllib.parse.unquote(match.group(1))]
    for value in _KEYWORD_PASSWORD.findall(conninfo):
        found += [value, value.strip("'")]
    password = (connection_args.get("kwargs") or {}).get("password")
    if password:
        found.append(str(password))
    return {secret for secret in found if secret}


def without_secrets(text: str, connection_args: Mapping[str, Any]) -> str:
    for secret in sorted(connection_secrets(connection_args), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
