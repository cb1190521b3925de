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
from typing import Any

ENV_PREFIX = "PROCRASTINATE_PREFORK_"
MAX_CHILDREN = 512
#: worker rows procrastinate's own start-up prune may delete: a day old
PROCRASTINATE_PRUNE_AFTER = 86400.0


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


def _positive_float(allow_zero: bool = False) -> Callable[[Any], float]:
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
        return number

    return parse


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse_optional(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
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


def _task_timeouts(value: Any) -> dict[str, float]:
    """``{"task.name": 10}`` from settings, or ``"a=10,b=2.5"`` / a list of
    ``NAME=SECONDS`` strings from the command line and environment."""
    seconds = _positive_float()
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


def _dotted_path(value: Any) -> str | Callable[..., Any] | None:
    if value is None or callable(value):
        return value
    text = str(value).strip()
    if not text:
        return None
    if not all(part.isidentifier() for part in text.replace(":", ".").split(".")):
        raise ConfigError(f"expected a dotted path to a callable, got {value!r}")
    return text


def resolve_hook(name: str, value: str | Callable[..., Any] | None) -> Callable[..., Any] | None:
    """Import a hook given as a dotted path (``pkg.module.func`` or
    ``pkg.module:func``); callables pass through."""
    if value is None or callable(value):
        return value
    import importlib

    module_name, sep, attribute = value.replace(":", ".").rpartition(".")
    try:
        hook = getattr(importlib.import_module(module_name), attribute) if sep else None
    except Exception as exc:  # the user's module failed to import
        raise ConfigError(f"--{name.replace('_', '-')}: cannot import {value!r}: {exc}") from None
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

    @property
    def env_vars(self) -> tuple[str, ...]:
        return (ENV_PREFIX + self.name.upper(), *self.env)

    @property
    def setting_key(self) -> str:
        return self.name

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default


OPTIONS: tuple[Option, ...] = (
    Option(
        "concurrency", ("-c", "--concurrency"), _int_between(1, MAX_CHILDREN),
        default_concurrency, "Number of child processes to fork.",
        metavar="N", default_doc="number of usable CPUs",
    ),
    Option(
        "child_concurrency", ("--child-concurrency",), _int_between(1, 1000), 1,
        "Jobs one child runs at once (procrastinate's worker concurrency: useful "
        "for async jobs; sync jobs of one child share its GIL).",
        group="worker", env=("PROCRASTINATE_WORKER_CONCURRENCY",), metavar="N",
    ),
    Option(
        "queues", ("-q", "--queues"), _queues, None,
        "Comma-separated queues to work on (default: all queues).",
        group="worker", env=("PROCRASTINATE_WORKER_QUEUES",), metavar="QUEUES",
        default_doc="all queues",
    ),
    Option(
        "name", ("-n", "--name"), _non_empty_str, "worker",
        "Worker name, passed to procrastinate (job context, logs); each child "
        "appends its slot.", group="worker", env=("PROCRASTINATE_WORKER_NAME",),
    ),
    Option(
        "wait", ("-w", "--wait"), _bool, True,
        "Keep waiting for new jobs; with --one-shot, each child exits once the "
        "queues are empty and the supervisor exits when all children have.",
        group="worker", env=("PROCRASTINATE_WORKER_WAIT",),
        negative_flag="--one-shot",
    ),
    Option(
        "fetch_job_polling_interval", ("--fetch-job-polling-interval",),
        _positive_float(), 5.0,
        "Seconds between polls for new jobs (a fallback to LISTEN/NOTIFY).",
        group="worker", env=("PROCRASTINATE_WORKER_FETCH_JOB_POLLING_INTERVAL",),
    ),
    Option(
        "abort_job_polling_interval", ("--abort-job-polling-interval",),
        _positive_float(), 5.0, "Seconds between polls for abort requests.",
        group="worker", env=("PROCRASTINATE_WORKER_ABORT_JOB_POLLING_INTERVAL",),
    ),
    Option(
        "shutdown_graceful_timeout", ("--shutdown-graceful-timeout",),
        _positive_float(allow_zero=True), 30.0,
        "On SIGTERM/SIGINT, seconds the running jobs of all children get (one "
        "shared deadline). Then procrastinate aborts async jobs, and children "
        "still busy a second later are killed: their sync jobs are retried.",
        group="worker", env=("PROCRASTINATE_WORKER_SHUTDOWN_GRACEFUL_TIMEOUT",),
    ),
    Option(
        "listen_notify", ("--listen-notify",), _bool, True,
        "Wake children on new jobs through the supervisor's single LISTEN session.",
        group="worker", env=("PROCRASTINATE_WORKER_LISTEN_NOTIFY",),
        negative_flag="--no-listen-notify",
    ),
    Option(
        "listen_dsn", ("--listen-dsn",), _listen_dsn, None,
        "libpq connection string of a direct (unpooled) connection for the "
        "supervisor's session (LISTEN, heartbeats, sweeps, recoveries), when the "
        "app's database URL goes through PgBouncer in transaction mode; without "
        "it the fleet then finds new jobs by polling.", metavar="DSN",
        default_doc="the app's connection",
    ),
    Option(
        "delete_jobs", ("--delete-jobs",), _choice("never", "successful", "always"),
        "never", "Delete finished jobs: never, successful or always.",
        group="worker", env=("PROCRASTINATE_WORKER_DELETE_JOBS",),
    ),
    Option(
        "stalled_timeout", ("--stalled-timeout",), _positive_float(), 30.0,
        "A 'doing' job whose worker has not sent a heartbeat for this many "
        "seconds (or has no worker row) is retried by the sweep of any supervisor.",
    ),
    Option(
        "heartbeat_interval", ("--heartbeat-interval",), _positive_float(), 5.0,
        "Seconds between the supervisor's heartbeats (its children's worker rows "
        "and the fleet table) and its stalled-job sweeps.",
    ),
    Option(
        "child_timeout", ("--child-timeout",), _positive_float(), 60.0,
        "A child whose event loop has not reported for this many seconds is "
        "considered wedged: it is killed, its jobs retried and it is replaced.",
    ),
    Option(
        "job_timeout", ("--job-timeout",), _optional(_positive_float()), None,
        "Hard time limit in seconds for any job: its child is stopped and "
        "replaced and the job fails (or retries if its retry strategy says so).",
        default_doc="no limit",
    ),
    Option(
        "task_timeouts", ("--task-timeout",), _task_timeouts, dict,
        "Per-task hard time limits, NAME=SECONDS (repeatable; a dict in Django "
        "settings).", metavar="NAME=SECONDS", repeatable=True, default_doc="none",
    ),
    Option(
        "max_crash_retries", ("--max-crash-retries",), _int_between(0, 1000), 3,
        "A job whose child died under it is retried at most this many times, "
        "then it is marked failed (poison-pill cap).",
    ),
    Option(
        "hostname", ("--hostname",), _non_empty_str, socket.gethostname,
        "Host name recorded in the fleet table (defaults to the machine's).",
        default_doc="the machine's host name",
    ),
    Option(
        "health_port", ("--health-port",), _optional(_int_between(1, 65535)), None,
        "Serve the probe endpoints /live, /ready and /status on this TCP port "
        "(from the supervisor's own loop: no thread, no extra process).",
        metavar="PORT", default_doc="off",
    ),
    Option(
        "health_host", ("--health-host",), _non_empty_str, "127.0.0.1",
        "Address the probe port listens on (0.0.0.0 for a Kubernetes probe).",
        metavar="HOST",
    ),
    Option(
        "restart_backoff_max", ("--restart-backoff-max",), _positive_float(), 30.0,
        "Upper bound in seconds of the delay before re-forking a child that keeps "
        "dying early.",
    ),
    Option(
        "max_jobs_per_child", ("--max-jobs-per-child",), _optional(_int_between(1, 10**9)),
        None, "Recycle a child after it has run this many jobs: it finishes its "
        "jobs, exits cleanly and is replaced.", metavar="N", default_doc="never",
    ),
    Option(
        "max_jobs_jitter", ("--max-jobs-jitter",), _int_between(0, 10**9), 0,
        "Add a random 0..J to each child's --max-jobs-per-child so that children "
        "do not all recycle at once.", metavar="J",
    ),
    Option(
        "max_memory_per_child", ("--max-memory-per-child",),
        _optional(_int_between(1, 10**7)), None,
        "Recycle a child once its resident memory exceeds this many MiB (checked "
        "after each job).", metavar="MB", default_doc="never",
    ),
    Option(
        "autoscale", ("--autoscale",), _autoscale, None,
        "MIN,MAX: start MIN children, grow toward MAX while runnable jobs wait, "
        "shrink toward MIN when idle (overrides --concurrency).", metavar="MIN,MAX",
        default_doc="off",
    ),
    Option(
        "autoscale_cooldown", ("--autoscale-cooldown",), _positive_float(), 30.0,
        "Seconds without waiting jobs before autoscale removes an idle child.",
    ),
    Option(
        "on_child_start", ("--on-child-start",), _dotted_path, None,
        "Dotted path of a callable run in each child after its bootstrap, with "
        "keyword arguments slot and pid.", metavar="PATH", default_doc="none",
    ),
    Option(
        "on_child_exit", ("--on-child-exit",), _dotted_path, None,
        "Dotted path of a callable run in the supervisor when a child exits, with "
        "keyword arguments slot, pid, exit_code and signal.", metavar="PATH",
        default_doc="none",
    ),
    Option(
        "log_level", ("--log-level",),
        _choice("debug", "info", "warning", "error", "critical"), "info",
        "Log level of the supervisor and children.",
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
    heartbeat_interval: float
    child_timeout: float
    job_timeout: float | None
    task_timeouts: Mapping[str, float]
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
    log_level: str

    @property
    def initial_children(self) -> int:
        return self.autoscale[0] if self.autoscale else self.concurrency

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
            # with a grace period after an outage (policy.sweep_allowed).
            "stalled_worker_timeout": max(self.stalled_timeout, PROCRASTINATE_PRUNE_AFTER),
            "update_heartbeat_interval": min(10.0, self.heartbeat_interval),
            "install_signal_handlers": False,
        }

    def time_limit_for(self, task_name: str | None) -> float | None:
        if task_name and task_name in self.task_timeouts:
            return self.task_timeouts[task_name]
        return self.job_timeout


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
        hint = f"did you mean {close[0]!r}?" if close else "see the configuration reference"
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
            values[option.name] = option.parse(raw)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    config = PreforkConfig(**values)
    if config.heartbeat_interval * 2 > config.stalled_timeout:
        raise ConfigError(
            f"--heartbeat-interval ({config.heartbeat_interval:g}) must be at most "
            f"half of --stalled-timeout ({config.stalled_timeout:g})"
        )
    return config


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
    if option.setting_key in settings:
        return settings[option.setting_key], (
            f"setting PROCRASTINATE_PREFORK[{option.setting_key!r}]"
        )
    return None, None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option to ``parser``; unset options stay absent from the
    namespace (``argparse.SUPPRESS``) so that the other sources can apply."""
    for option in OPTIONS:
        if option.negative_flag:
            group = parser.add_mutually_exclusive_group()
            group.add_argument(
                *option.flags, dest=option.name, action="store_const", const="1",
                default=argparse.SUPPRESS, help=option.help,
            )
            group.add_argument(
                option.negative_flag, dest=option.name, action="store_const",
                const="0", default=argparse.SUPPRESS,
                help=f"Opposite of {option.flags[-1]}.",
            )
        elif option.repeatable:
            parser.add_argument(
                *option.flags, dest=option.name, action="append",
                default=argparse.SUPPRESS, metavar=option.metavar, help=option.help,
            )
        else:
            parser.add_argument(
                *option.flags, dest=option.name, default=argparse.SUPPRESS,
                metavar=option.metavar, help=option.help,
            )


def cli_values_from_namespace(
    namespace: argparse.Namespace | Mapping[str, Any], names: Sequence[str] | None = None
) -> dict[str, Any]:
    data = vars(namespace) if isinstance(namespace, argparse.Namespace) else namespace
    names = names or [option.name for option in OPTIONS]
    return {name: data[name] for name in names if name in data}
