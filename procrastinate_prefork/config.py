"""Validated options of the prefork worker.

Every option is declared once, in ``OPTIONS``: its command-line flag, its
environment variables, its key in the Django ``PROCRASTINATE_PREFORK`` settings
dict, its default and its meaning. The CLI, the Django command and the
configuration reference in the docs are all generated from this table.

Precedence: command line, then environment, then Django settings, then default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from .policy import STALLED_TIMEOUT

ENV_PREFIX = "PROCRASTINATE_PREFORK_"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"
MAX_CHILDREN = 512
#: worker rows procrastinate's own start-up prune may delete: a day old
PROCRASTINATE_PRUNE_AFTER = 86400.0


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


# --- value parsers: each takes a raw value (str from CLI/env, anything from
# Django settings) and returns the typed value or raises ConfigError.


def _int_between(low: int, high: int) -> Callable[[Any], int]:
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


def _seconds(name: str, allow_zero: bool = False) -> Callable[[Any], float]:
    return _positive_float(allow_zero, DURATION_MAXIMA[name])


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse_optional(value: Any) -> Any:
        if value is None or (
            isinstance(value, str) and value.strip().lower() in ("", "none")
        ):
            return None
        return parse(value)

    return parse_optional


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "y", "yes", "t", "true", "on"):
        return True
    if text in ("0", "n", "no", "f", "false", "off"):
        return False
    raise ConfigError(f"expected a boolean (1/0, yes/no, true/false), got {value!r}")


def _queues(value: Any) -> tuple[str, ...] | None:
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


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ConfigError(f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    return parse


def _non_empty_str(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ConfigError("must not be empty")
    if len(text) > 200:
        raise ConfigError("must be at most 200 characters")
    return text


def _listen_dsn(value: Any) -> str | None:
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


def _task_timeouts(value: Any, option: str = "task_timeouts") -> dict[str, float]:
    """``{"task.name": 10}`` from settings, or ``"a=10,b=2.5"`` / a list of
    ``NAME=SECONDS`` strings from the command line and environment."""
    seconds = _seconds(option)
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): seconds(v) for k, v in value.items()}
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"expected NAME=SECONDS pairs, got {value!r}")
    result: dict[str, float] = {}
    for item in value:
        name, sep, raw = str(item).partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"expected NAME=SECONDS, got {item!r}")
        result[name.strip()] = seconds(raw)
    return result


def _task_soft_timeouts(value: Any) -> dict[str, float]:
    return _task_timeouts(value, "task_soft_timeouts")


def _autoscale(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        low_raw, high_raw = value
    else:
        low_raw, sep, high_raw = str(value).partition(",")
        if not sep:
            raise ConfigError(f"expected MIN,MAX, got {value!r}")
    low = _int_between(1, MAX_CHILDREN)(low_raw)
    high = _int_between(1, MAX_CHILDREN)(high_raw)
    if low > high:
        raise ConfigError(f"MIN must not exceed MAX, got {value!r}")
    return (low, high)


def _dotted_path(value: object) -> str | Callable[..., Any] | None:
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


def default_concurrency() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class Option:
    name: str
    flags: tuple[str, ...]
    parse: Callable[[Any], Any]
    default: Any
    help: str
    group: str = "prefork"  # "worker": passed through to procrastinate's Worker
    env: tuple[str, ...] = ()
    metavar: str | None = None
    negative_flag: str | None = None  # for booleans: the flag that sets False
    repeatable: bool = False
    default_doc: str | None = None  # how the default reads in the docs
    count: bool = False  # a flag counted on the command line (-v -v)

    @property
    def env_vars(self) -> tuple[str, ...]:
        return (ENV_PREFIX + self.name.upper(), *self.env)

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default


OPTIONS: tuple[Option, ...] = (
    Option(
        "concurrency",
        ("-c", "--concurrency"),
        _int_between(1, MAX_CHILDREN),
        default_concurrency,
        "Number of child processes to fork.",
        metavar="N",
        default_doc="number of usable CPUs",
    ),
    Option(
        "child_concurrency",
        ("--child-concurrency",),
        _int_between(1, 1000),
        1,
        "Jobs one child runs at once (procrastinate's worker concurrency: useful "
        "for async jobs; sync jobs of one child share its GIL).",
        group="worker",
        env=("PROCRASTINATE_WORKER_CONCURRENCY",),
        metavar="N",
    ),
    Option(
        "queues",
        ("-q", "--queues"),
        _queues,
        None,
        "Comma-separated queues to work on (default: all queues); a name has at "
        "most 128 characters.",
        group="worker",
        env=("PROCRASTINATE_WORKER_QUEUES",),
        metavar="QUEUES",
        default_doc="all queues",
    ),
    Option(
        "name",
        ("-n", "--name"),
        _non_empty_str,
        "worker",
        "Worker name, passed to procrastinate (job context, logs); each child "
        "appends its slot.",
        group="worker",
        env=("PROCRASTINATE_WORKER_NAME",),
    ),
    Option(
        "wait",
        ("-w", "--wait"),
        _bool,
        True,
        "Keep waiting for new jobs; with --one-shot, each child exits once the "
        "queues are empty and the supervisor exits when all children have.",
        group="worker",
        env=("PROCRASTINATE_WORKER_WAIT",),
        negative_flag="--one-shot",
    ),
    Option(
        "fetch_job_polling_interval",
        ("--fetch-job-polling-interval",),
        _seconds("fetch_job_polling_interval"),
        5.0,
        "Seconds between polls for new jobs (a fallback to LISTEN/NOTIFY); "
        "at most 3600 s.",
        group="worker",
        env=("PROCRASTINATE_WORKER_FETCH_JOB_POLLING_INTERVAL",),
    ),
    Option(
        "abort_job_polling_interval",
        ("--abort-job-polling-interval",),
        _seconds("abort_job_polling_interval"),
        5.0,
        "Seconds between polls for abort requests; at most 3600 s.",
        group="worker",
        env=("PROCRASTINATE_WORKER_ABORT_JOB_POLLING_INTERVAL",),
    ),
    Option(
        "shutdown_graceful_timeout",
        ("--shutdown-graceful-timeout",),
        _seconds("shutdown_graceful_timeout", allow_zero=True),
        30.0,
        "On SIGTERM/SIGINT, seconds the running jobs of all children get (one "
        "shared deadline). Then procrastinate aborts async jobs, and children "
        "still busy a second later are killed: their sync jobs are retried. "
        "At most 86400 s.",
        group="worker",
        env=("PROCRASTINATE_WORKER_SHUTDOWN_GRACEFUL_TIMEOUT",),
    ),
    Option(
        "listen_notify",
        ("--listen-notify",),
        _bool,
        True,
        "Wake children on new jobs through the supervisor's single LISTEN session.",
        group="worker",
        env=("PROCRASTINATE_WORKER_LISTEN_NOTIFY",),
        negative_flag="--no-listen-notify",
    ),
    Option(
        "listen_dsn",
        ("--listen-dsn",),
        _listen_dsn,
        None,
        "libpq connection string of a direct (unpooled) connection for the "
        "supervisor's session (LISTEN, heartbeats, sweeps, recoveries), when the "
        "app's database URL goes through PgBouncer in transaction mode; without "
        "it the fleet then finds new jobs by polling.",
        metavar="DSN",
        default_doc="the app's connection",
    ),
    Option(
        "delete_jobs",
        ("--delete-jobs",),
        _choice("never", "successful", "always"),
        "never",
        "Delete finished jobs: never, successful or always.",
        metavar="{never,successful,always}",
        group="worker",
        env=("PROCRASTINATE_WORKER_DELETE_JOBS",),
    ),
    Option(
        "stalled_timeout",
        ("--stalled-timeout",),
        _seconds("stalled_timeout"),
        STALLED_TIMEOUT,
        "A 'doing' job of this supervisor's children whose worker has not sent "
        "a heartbeat for this many seconds is retried by the sweep of any "
        "supervisor (recorded in the fleet table: each host is judged by its own). "
        "At most 86400 s.",
    ),
    Option(
        "stock_worker_timeout",
        ("--stock-worker-timeout",),
        _seconds("stock_worker_timeout"),
        3600.0,
        "A 'doing' job of a worker no prefork supervisor runs (a stock "
        "procrastinate worker) is retried by the sweep only once that worker has "
        "sent no heartbeat for this many seconds (a job that lost its worker row: "
        "once it has run this long). Make it longer than a stock worker's drain. "
        "At most 86400 s.",
    ),
    Option(
        "heartbeat_interval",
        ("--heartbeat-interval",),
        _seconds("heartbeat_interval"),
        5.0,
        "Seconds between the supervisor's heartbeats (its children's worker rows "
        "and the fleet table) and its stalled-job sweeps; at most 3600 s. It also "
        "sets the bounds of the supervisor's database calls (statement timeout: "
        "this interval within 1..10 s; lock timeout: half of it, at most 1 s; its own "
        "deadline: one second more).",
    ),
    Option(
        "child_timeout",
        ("--child-timeout",),
        _seconds("child_timeout"),
        60.0,
        "A child whose event loop has not reported for this many seconds is "
        "considered wedged: it is killed, its jobs retried and it is replaced. "
        "At most 86400 s.",
    ),
    Option(
        "job_timeout",
        ("--job-timeout",),
        _optional(_seconds("job_timeout")),
        None,
        "Hard time limit in seconds for any job: its child is stopped and "
        "replaced and the job fails (or retries if its retry strategy says so). "
        "At most 2592000 s (30 days).",
        default_doc="no limit",
    ),
    Option(
        "task_timeouts",
        ("--task-timeout",),
        _task_timeouts,
        dict,
        "Per-task hard time limits, NAME=SECONDS (repeatable; a dict in Django "
        "settings); at most 2592000 s (30 days). A NAME that is not a "
        "registered task is warned about at start.",
        metavar="NAME=SECONDS",
        repeatable=True,
        default_doc="none",
    ),
    Option(
        "soft_job_timeout",
        ("--soft-job-timeout",),
        _optional(_seconds("soft_job_timeout")),
        None,
        "Soft time limit in seconds for any job: past it, the job's child raises "
        "procrastinate_prefork.SoftTimeLimitExceeded in the task (a sync task at "
        "its next Python instruction; an async task at its current await), which "
        "it may catch to clean up; the child lives on. Must be below the hard "
        "limit of the same task. At most 2592000 s (30 days).",
        default_doc="no limit",
    ),
    Option(
        "task_soft_timeouts",
        ("--task-soft-timeout",),
        _task_soft_timeouts,
        dict,
        "Per-task soft time limits, NAME=SECONDS (repeatable; a dict in Django "
        "settings); at most 2592000 s (30 days).",
        metavar="NAME=SECONDS",
        repeatable=True,
        default_doc="none",
    ),
    Option(
        "max_crash_retries",
        ("--max-crash-retries",),
        _int_between(0, 1000),
        3,
        "A job whose child died under it is retried at most this many times, "
        "then it is marked failed (poison-pill cap).",
    ),
    Option(
        "hostname",
        ("--hostname",),
        _non_empty_str,
        socket.gethostname,
        "Host name recorded in the fleet table (defaults to the machine's).",
        default_doc="the machine's host name",
    ),
    Option(
        "health_port",
        ("--health-port",),
        _optional(_int_between(1, 65535)),
        None,
        "Serve the probe endpoints /live, /ready and /status on this TCP port "
        "(from the supervisor's own loop: no thread, no extra process), and "
        "/metrics with the metrics extra.",
        metavar="PORT",
        default_doc="off",
    ),
    Option(
        "health_host",
        ("--health-host",),
        _non_empty_str,
        "127.0.0.1",
        "Address the probe port listens on (0.0.0.0 for a Kubernetes probe).",
        metavar="HOST",
    ),
    Option(
        "restart_backoff_max",
        ("--restart-backoff-max",),
        _seconds("restart_backoff_max"),
        30.0,
        "Upper bound in seconds of the delay before re-forking a child that keeps "
        "dying early; at most 3600 s.",
    ),
    Option(
        "max_jobs_per_child",
        ("--max-jobs-per-child",),
        _optional(_int_between(1, 10**9)),
        None,
        "Recycle a child after it has run this many jobs: it finishes its "
        "jobs, exits cleanly and is replaced.",
        metavar="N",
        default_doc="never",
    ),
    Option(
        "max_jobs_jitter",
        ("--max-jobs-jitter",),
        _int_between(0, 10**9),
        0,
        "Add a random 0..J to each child's --max-jobs-per-child so that children "
        "do not all recycle at once.",
        metavar="J",
    ),
    Option(
        "max_memory_per_child",
        ("--max-memory-per-child",),
        _optional(_int_between(1, 10**7)),
        None,
        "Recycle a child once its resident memory exceeds this many MiB (checked "
        "after each job).",
        metavar="MB",
        default_doc="never",
    ),
    Option(
        "autoscale",
        ("--autoscale",),
        _autoscale,
        None,
        "MIN,MAX: start MIN children, grow toward MAX while runnable jobs wait, "
        "shrink toward MIN when idle (overrides --concurrency).",
        metavar="MIN,MAX",
        default_doc="off",
    ),
    Option(
        "autoscale_cooldown",
        ("--autoscale-cooldown",),
        _seconds("autoscale_cooldown"),
        30.0,
        "Seconds without waiting jobs before autoscale removes an idle child; "
        "at most 86400 s.",
    ),
    Option(
        "on_child_start",
        ("--on-child-start",),
        _dotted_path,
        None,
        "Dotted path of a callable run in each child after its bootstrap, with "
        "keyword arguments slot and pid.",
        metavar="PATH",
        default_doc="none",
    ),
    Option(
        "on_child_exit",
        ("--on-child-exit",),
        _dotted_path,
        None,
        "Dotted path of a callable run in the supervisor when a child exits, with "
        "keyword arguments slot, pid, exit_code and signal.",
        metavar="PATH",
        default_doc="none",
    ),
    Option(
        "log_level",
        ("--log-level",),
        _optional(_choice(*LOG_LEVELS)),
        None,
        "Log level of the supervisor and children (procrastinate's --log-level). "
        "Under manage.py with LOGGING configured, unset leaves Django's levels. "
        "run_worker() sets only the procrastinate_prefork logger's level.",
        env=("PROCRASTINATE_LOG_LEVEL",),
        default_doc="`info`, or Django's `LOGGING`",
        metavar="{" + ",".join(LOG_LEVELS) + "}",
    ),
    # procrastinate's CLI logging options, with the same names and variables.
    Option(
        "log_format",
        ("--log-format",),
        _non_empty_str,
        DEFAULT_LOG_FORMAT,
        "Format of the log lines (Python logging's LogRecord attributes), or "
        "json: one JSON object per line. Applies when logging is not configured "
        "already (Django's LOGGING wins under manage.py). "
        "Not used by run_worker(), which leaves logging to its caller.",
        env=("PROCRASTINATE_LOG_FORMAT",),
        metavar="FORMAT",
    ),
    Option(
        "log_format_style",
        ("--log-format-style",),
        _choice("%", "{", "$"),
        "%",
        "Style of --log-format: %, { or $ (Python logging's styles).",
        env=("PROCRASTINATE_LOG_FORMAT_STYLE",),
        metavar="STYLE",
    ),
    Option(
        "verbose",
        ("-v", "--verbose"),
        _int_between(0, 100),
        0,
        "Deprecated (as in procrastinate): -v means --log-level debug; "
        "--log-level wins over it. Under manage.py only --verbose: -v is Django's "
        "--verbosity.",
        env=("PROCRASTINATE_VERBOSE",),
        count=True,
        default_doc="`0`",
    ),
)

OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


@dataclasses.dataclass(frozen=True)
class PreforkConfig:
    concurrency: int
    child_concurrency: int
    queues: tuple[str, ...] | None
    name: str
    wait: bool
    fetch_job_polling_interval: float
    abort_job_polling_interval: float
    shutdown_graceful_timeout: float
    listen_notify: bool
    listen_dsn: str | None = dataclasses.field(repr=False)  # may hold a password
    delete_jobs: str
    stalled_timeout: float
    stock_worker_timeout: float
    heartbeat_interval: float
    child_timeout: float
    job_timeout: float | None
    task_timeouts: Mapping[str, float]
    soft_job_timeout: float | None
    task_soft_timeouts: Mapping[str, float]
    max_crash_retries: int
    hostname: str
    health_port: int | None
    health_host: str
    restart_backoff_max: float
    max_jobs_per_child: int | None
    max_jobs_jitter: int
    max_memory_per_child: int | None
    autoscale: tuple[int, int] | None
    autoscale_cooldown: float
    on_child_start: str | Callable[..., Any] | None
    on_child_exit: str | Callable[..., Any] | None
    log_level: str | None
    log_format: str
    log_format_style: Literal["%", "{", "$"]  # checked by the option's _choice
    verbose: int

    @property
    def effective_log_level(self) -> str | None:
        """procrastinate's rule: --log-level, else -v means debug, else unset."""
        if self.log_level:
            return self.log_level
        return "debug" if self.verbose > 0 else None

    def worker_options(self, slot: int) -> dict[str, Any]:
        """Keyword arguments for procrastinate's ``App.run_worker_async``."""
        return {
            "queues": list(self.queues) if self.queues else None,
            "name": f"{self.name}-{slot}",
            "concurrency": self.child_concurrency,
            "wait": self.wait,
            "fetch_job_polling_interval": self.fetch_job_polling_interval,
            "abort_job_polling_interval": self.abort_job_polling_interval,
            # The supervisor enforces the shared deadline with SIGKILL; the
            # worker's own timeout makes async jobs see a clean abort first.
            "shutdown_graceful_timeout": self.shutdown_graceful_timeout,
            "listen_notify": self.listen_notify,
            "delete_jobs": self.delete_jobs,
            # procrastinate's worker deletes, when it starts, the worker rows
            # older than this. Right after a database outage every row is old,
            # the live workers' too: a child starting then would delete them
            # (their jobs lose their worker id, the sweep retries them while
            # they run). The supervisors' sweep prunes dead workers instead,
            # only from heartbeats that could be written (recovery.Judgement).
            "stalled_worker_timeout": max(
                self.stalled_timeout, PROCRASTINATE_PRUNE_AFTER
            ),
            "update_heartbeat_interval": min(10.0, self.heartbeat_interval),
            "install_signal_handlers": False,
        }

    def time_limit_for(self, task_name: str | None) -> float | None:
        if task_name and task_name in self.task_timeouts:
            return self.task_timeouts[task_name]
        return self.job_timeout

    def soft_time_limit_for(self, task_name: str | None) -> float | None:
        if task_name and task_name in self.task_soft_timeouts:
            return self.task_soft_timeouts[task_name]
        return self.soft_job_timeout

    def soft_limit_problem(self) -> str | None:
        """The first task whose soft limit could never fire before its hard one."""
        for task in (None, *sorted({*self.task_timeouts, *self.task_soft_timeouts})):
            soft, hard = self.soft_time_limit_for(task), self.time_limit_for(task)
            if soft is not None and hard is not None and soft >= hard:
                which = f"task {task!r}" if task else "every task"
                return (
                    f"the soft time limit of {which} ({soft:g} s) must be below "
                    f"its hard time limit ({hard:g} s)"
                )
        return None


def build_config(
    cli_values: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> PreforkConfig:
    """Merge the sources and validate every value.

    ``cli_values`` holds only the options given on the command line.
    Raises ConfigError with a one-line message naming the option and its source.
    """
    environ = os.environ if environ is None else environ
    settings = settings or {}
    if not isinstance(settings, Mapping):
        raise ConfigError("setting PROCRASTINATE_PREFORK: expected a dict")
    unknown = sorted(set(settings) - set(OPTIONS_BY_NAME))
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], OPTIONS_BY_NAME, n=1)
        hint = (
            f"did you mean {close[0]!r}?"
            if close
            else "see the configuration reference"
        )
        raise ConfigError(
            f"setting PROCRASTINATE_PREFORK: unknown key {unknown[0]!r} ({hint})"
        )
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw, source = _pick(option, cli_values, environ, settings)
        if source is None:
            values[option.name] = option.default_value()
            continue
        try:
            values[option.name] = (
                parse_setting(option, raw)
                if source.startswith("setting ")
                else option.parse(raw)
            )
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    config = PreforkConfig(**values)
    if config.heartbeat_interval * 2 > config.stalled_timeout:
        raise ConfigError(
            f"--heartbeat-interval ({config.heartbeat_interval:g}) must be at most "
            f"half of --stalled-timeout ({config.stalled_timeout:g})"
        )
    problem = config.soft_limit_problem()
    if problem:
        raise ConfigError(f"--soft-job-timeout/--task-soft-timeout: {problem}")
    return config


def parse_setting(option: Option, value: Any) -> Any:
    """``option.parse`` for a value of the Django settings dict, where numbers
    and booleans must be Python numbers and booleans: ``"4"`` is a string
    there, a mistake the command line and the environment cannot make."""
    parsed = option.parse(value)
    if isinstance(value, str) and isinstance(parsed, (bool, int, float)):
        kind = "a boolean" if isinstance(parsed, bool) else "a number"
        raise ConfigError(f"expected {kind}, not the string {value!r}")
    return parsed


def settings_problems(settings: Any) -> list[tuple[str, str | None, str]]:
    """Every problem of a ``PROCRASTINATE_PREFORK`` settings dict, for Django's
    system checks: ``(kind, key, message)`` with kind ``not_a_dict``,
    ``unknown``, ``invalid`` (type or range) or ``inconsistent`` (values that
    do not go together). The messages are ``build_config``'s."""
    if not isinstance(settings, Mapping):
        return [
            (
                "not_a_dict",
                None,
                f"setting PROCRASTINATE_PREFORK: expected a dict, got "
                f"{type(settings).__name__}",
            )
        ]
    problems: list[tuple[str, str | None, str]] = []
    for key, value in settings.items():
        try:
            build_config({}, environ={}, settings={key: value})
        except ConfigError as exc:
            if key not in OPTIONS_BY_NAME:
                problems.append(("unknown", key, str(exc)))
            elif str(exc).startswith("setting "):
                problems.append(("invalid", key, str(exc)))
    if not problems:
        try:
            build_config({}, environ={}, settings=settings)
        except ConfigError as exc:
            problems.append(("inconsistent", None, str(exc)))
    return problems


def _pick(
    option: Option,
    cli_values: Mapping[str, Any],
    environ: Mapping[str, str],
    settings: Mapping[str, Any],
) -> tuple[Any, str | None]:
    if option.name in cli_values:
        return cli_values[option.name], option.flags[-1]
    for var in option.env_vars:
        if environ.get(var, "") != "":
            return environ[var], f"environment variable {var}"
    if option.name in settings:
        return settings[option.name], (
            f"setting PROCRASTINATE_PREFORK[{option.name!r}]"
        )
    return None, None


def help_text(option: Option) -> str:
    """The option's help for ``--help``: with its default and its environment
    variables (escaped for argparse, which %-formats help strings)."""
    if option.default_doc is not None:
        default = option.default_doc.replace("`", "")
    elif callable(option.default) or option.default is None:
        default = "none"
    else:
        default = (
            str(option.default).lower()
            if isinstance(option.default, bool)
            else str(option.default)
        )
    text = f"{option.help} (default: {default}; env: {', '.join(option.env_vars)})"
    return text.replace("%", "%%")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option to ``parser``; unset options stay absent from the
    namespace (``argparse.SUPPRESS``) so that the other sources can apply."""
    for option in OPTIONS:
        # Flags the parser already has are left to it: Django's commands own
        # -v (--verbosity).
        flags = [f for f in option.flags if f not in parser._option_string_actions]
        if option.negative_flag:
            group = parser.add_mutually_exclusive_group()
            group.add_argument(
                *flags,
                dest=option.name,
                action="store_const",
                const="1",
                default=argparse.SUPPRESS,
                help=help_text(option),
            )
            group.add_argument(
                option.negative_flag,
                dest=option.name,
                action="store_const",
                const="0",
                default=argparse.SUPPRESS,
                help=f"Opposite of {option.flags[-1]}.",
            )
        elif option.count:
            parser.add_argument(
                *flags,
                dest=option.name,
                action="count",
                default=argparse.SUPPRESS,
                help=help_text(option),
            )
        elif option.repeatable:
            parser.add_argument(
                *flags,
                dest=option.name,
                action="append",
                default=argparse.SUPPRESS,
                metavar=option.metavar,
                help=help_text(option),
            )
        else:
            parser.add_argument(
                *flags,
                dest=option.name,
                default=argparse.SUPPRESS,
                metavar=option.metavar,
                help=help_text(option),
            )


def suggest_flags(parser: argparse.ArgumentParser, message: str) -> str:
    """argparse's ``unrecognized arguments: ...`` message, with the closest
    flag ``parser`` knows for each mistyped one (as the settings keys get)."""
    prefix = "unrecognized arguments: "
    if not message.startswith(prefix):
        return message
    import difflib

    known = [flag for flag in parser._option_string_actions if flag.startswith("--")]
    hints = []
    for token in message[len(prefix) :].split():
        flag = token.split("=", 1)[0]
        if flag.startswith("--"):
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
            if close:
                hints.append(f"{flag}: did you mean {close[0]}?")
    return f"{message} ({'; '.join(hints)})" if hints else message


def cli_values_from_namespace(
    namespace: argparse.Namespace | Mapping[str, Any],
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    data = vars(namespace) if isinstance(namespace, argparse.Namespace) else namespace
    names = names or [option.name for option in OPTIONS]
    return {name: data[name] for name in names if name in data}
