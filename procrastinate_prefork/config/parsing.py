"""Option values: their parsers, the limits they are checked against and the
error a bad one raises.

A parser takes a raw value (a str from the command line or the environment,
anything from Django settings) and returns the typed value or raises
ConfigError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .declaration import Option

MAX_CHILDREN = 512

HOUR, DAY = 3600.0, 86400.0
#: Upper bounds of the options in seconds: beyond them a value is a mistake
#: (1e16 s overflows PostgreSQL's intervals and timestamps).
DURATION_MAXIMA = {
    "fetch_job_polling_interval": HOUR,
    "abort_job_polling_interval": HOUR,
    "shutdown_graceful_timeout": DAY,
    "stalled_timeout": DAY,
    "stock_worker_timeout": DAY,
    "heartbeat_interval": HOUR,
    "child_timeout": DAY,
    "job_timeout": 30 * DAY,
    "task_timeouts": 30 * DAY,
    "soft_job_timeout": 30 * DAY,
    "task_soft_timeouts": 30 * DAY,
    "restart_backoff_max": HOUR,
    "autoscale_cooldown": DAY,
}
#: procrastinate_jobs.queue_name is varchar(128): a longer name never has jobs
MAX_QUEUE_NAME = 128


class ConfigError(ValueError):
    """A bad option value. Its message is one line, meant for the user."""


def parse_setting(option: Option, value: Any) -> Any:
    """``option.parse`` for a value of the Django settings dict, where numbers
    and booleans must be Python numbers and booleans: ``"4"`` is a string
    there, a mistake the command line and the environment cannot make."""
    parsed = option.parse(value)
    if isinstance(value, str) and isinstance(parsed, (bool, int, float)):
        kind = "a boolean" if isinstance(parsed, bool) else "a number"
        raise ConfigError(f"expected {kind}, not the string {value!r}")
    return parsed


# --- value parsers: each takes a raw value (str from CLI/env, anything from
# Django settings) and returns the typed value or raises ConfigError.


def int_between(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ConfigError(f"expected an integer, got {value!r}")
        try:
            number = int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise ConfigError(f"expected an integer, got {value!r}") from None
        if not low <= number <= high:
            raise ConfigError(f"must be between {low} and {high}, got {number}")
        return number

    return parse


def _positive_float(
    allow_zero: bool = False, maximum: float | None = None
) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ConfigError(f"expected a number of seconds, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"expected a number of seconds, got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ConfigError(f"expected a finite number, got {value!r}")
        if number < 0 or (number == 0 and not allow_zero):
            raise ConfigError(
                f"must be {'zero or more' if allow_zero else 'more than zero'}, "
                f"got {value!r}"
            )
        if maximum is not None and number > maximum:
            raise ConfigError(f"must be at most {maximum:.0f} (seconds), got {value!r}")
        return number

    return parse


def seconds(name: str, allow_zero: bool = False) -> Callable[[Any], float]:
    return _positive_float(allow_zero, DURATION_MAXIMA[name])


def optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse_optional(value: Any) -> Any:
        if value is None or (
            isinstance(value, str) and value.strip().lower() in ("", "none")
        ):
            return None
        return parse(value)

    return parse_optional


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "y", "yes", "t", "true", "on"):
        return True
    if text in ("0", "n", "no", "f", "false", "off"):
        return False
    raise ConfigError(f"expected a boolean (1/0, yes/no, true/false), got {value!r}")


def queues(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        items = [q.strip() for q in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = [str(q).strip() for q in value]
    else:
        raise ConfigError(f"expected a comma-separated list of queues, got {value!r}")
    items = [q for q in items if q]
    if any(len(q) > MAX_QUEUE_NAME for q in items):
        raise ConfigError(
            f"a queue name must be at most {MAX_QUEUE_NAME} characters "
            "(procrastinate's limit)"
        )
    return tuple(items) or None


def choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ConfigError(f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    return parse


def non_empty_str(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ConfigError("must not be empty")
    if len(text) > 200:
        raise ConfigError("must be at most 200 characters")
    return text


def listen_dsn(value: Any) -> str | None:
    """A libpq connection string. Errors never repeat it: it may hold a
    password."""
    if value is None or not str(value).strip():
        return None
    import psycopg

    text = str(value).strip()
    try:
        psycopg.conninfo.conninfo_to_dict(text)
    except psycopg.Error:
        raise ConfigError(
            "not a valid libpq connection string (a postgresql:// URL or "
            "key=value pairs)"
        ) from None
    return text


def task_timeouts(value: Any, option: str = "task_timeouts") -> dict[str, float]:
    """``{"task.name": 10}`` from settings, or ``"a=10,b=2.5"`` / a list of
    ``NAME=SECONDS`` strings from the command line and environment."""
    to_seconds = seconds(option)
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): to_seconds(v) for k, v in value.items()}
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"expected NAME=SECONDS pairs, got {value!r}")
    result: dict[str, float] = {}
    for item in value:
        name, sep, raw = str(item).partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"expected NAME=SECONDS, got {item!r}")
        result[name.strip()] = to_seconds(raw)
    return result


def task_soft_timeouts(value: Any) -> dict[str, float]:
    return task_timeouts(value, "task_soft_timeouts")


def autoscale(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        low_raw, high_raw = value
    else:
        low_raw, sep, high_raw = str(value).partition(",")
        if not sep:
            raise ConfigError(f"expected MIN,MAX, got {value!r}")
    low = int_between(1, MAX_CHILDREN)(low_raw)
    high = int_between(1, MAX_CHILDREN)(high_raw)
    if low > high:
        raise ConfigError(f"MIN must not exceed MAX, got {value!r}")
    return (low, high)


def dotted_path(value: object) -> str | Callable[..., Any] | None:
    if value is None or callable(value):
        return value
    text = str(value).strip()
    if not text:
        return None
    if not all(part.isidentifier() for part in text.replace(":", ".").split(".")):
        raise ConfigError(f"expected a dotted path to a callable, got {value!r}")
    return text


def resolve_hook(
    name: str, value: str | Callable[..., Any] | None
) -> Callable[..., Any] | None:
    """Import a hook given as a dotted path (``pkg.module.func`` or
    ``pkg.module:func``); callables pass through."""
    if value is None or callable(value):
        return value
    import importlib

    module_name, sep, attribute = value.replace(":", ".").rpartition(".")
    try:
        hook: object = (
            getattr(importlib.import_module(module_name), attribute) if sep else None
        )
    except Exception as exc:  # the user's module failed to import
        raise ConfigError(
            f"--{name.replace('_', '-')}: cannot import {value!r}: {exc}"
        ) from None
    if not callable(hook):
        raise ConfigError(f"--{name.replace('_', '-')}: {value!r} is not a callable")
    return hook
