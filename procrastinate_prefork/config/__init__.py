"""The resolved configuration of the prefork worker: every option of the table
(``options.OPTIONS``) merged from its sources and validated, as one
``PreforkConfig``.

Precedence: command line, then environment, then Django settings, then default.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

from . import pool_options
from .declaration import Option
from .parsing import ConfigError, parse_setting
from .pools import PoolSpec

# docs/ name procrastinate_prefork.config.ConfigError and .OPTIONS: both stay
# importable from here.
from .table import OPTIONS, OPTIONS_BY_NAME

#: worker rows procrastinate's own start-up prune may delete: a day old
PROCRASTINATE_PRUNE_AFTER = 86400.0
#: how many of its polling intervals the supervisor's polls may be late
#: before the children poll on their own again (one second more for the turn)
POLLS_LATE_AFTER = 2


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
    metrics_label_limit: int
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
    #: several pools of children (``config.pools``); empty: one pool of the
    #: top-level options
    pools: tuple[PoolSpec, ...] = dataclasses.field(default=(), repr=False)
    #: the options given by a source other than their default (command line,
    #: environment, settings): what the user asked for explicitly
    given: frozenset[str] = dataclasses.field(
        default=frozenset(), repr=False, compare=False
    )

    @property
    def effective_log_level(self) -> str | None:
        """procrastinate's rule: --log-level, else -v means debug, else unset."""
        if self.log_level:
            return self.log_level
        return "debug" if self.verbose > 0 else None

    @property
    def polls_late_after(self) -> float:
        """Seconds since the supervisor's last polls after which a child's
        timer fetches on its own (the supervisor stopped, its session down)."""
        return self.fetch_job_polling_interval * POLLS_LATE_AFTER + 1.0

    def worker_options(self, slot: int) -> dict[str, Any]:
        """Keyword arguments for procrastinate's ``App.run_worker_async``."""
        return {
            "queues": list(self.queues) if self.queues else None,
            "name": f"{self.name}-{slot}",
            "concurrency": self.child_concurrency,
            "wait": self.wait,
            # the supervisor polls for its children (supervisor/poller.py)
            # and wakes them through their pipes: a fetch of the child's own
            # timer is skipped while those polls are on time
            # (compat.fetches.fetch_when_needed)
            "fetch_job_polling_interval": self.fetch_job_polling_interval,
            "abort_job_polling_interval": self.abort_job_polling_interval,
            # The supervisor enforces the shared deadline with SIGKILL; the
            # worker's own timeout makes async jobs see a clean abort first.
            "shutdown_graceful_timeout": self.shutdown_graceful_timeout,
            # the wake pipe, not a LISTEN: with --no-listen-notify it carries
            # the supervisor's polls alone
            "listen_notify": True,
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
    sources: dict[str, str] = {}
    for option in OPTIONS:
        raw, source = _pick(option, cli_values, environ, settings)
        if source is None:
            values[option.name] = option.default_value()
            continue
        sources[option.name] = source
        try:
            values[option.name] = (
                parse_setting(option, raw)
                if source.startswith("setting ")
                else option.parse(raw)
            )
        except ConfigError as exc:
            # the same class: Django's checks tell a pool's problems apart
            raise type(exc)(f"{source}: {exc}") from None
    declared = values.pop("pools")
    config = PreforkConfig(**values, given=frozenset(sources))
    if config.heartbeat_interval * 2 > config.stalled_timeout:
        raise ConfigError(
            f"--heartbeat-interval ({config.heartbeat_interval:g}) must be at most "
            f"half of --stalled-timeout ({config.stalled_timeout:g})"
        )
    problem = config.soft_limit_problem()
    if problem:
        raise ConfigError(f"--soft-job-timeout/--task-soft-timeout: {problem}")
    ranks = {name: _rank(source) for name, source in sources.items()}
    return pool_options.resolve(config, declared, sources, ranks)


def settings_problems(settings: Any) -> list[tuple[str, str | None, str]]:
    """Every problem of a ``PROCRASTINATE_PREFORK`` settings dict, for Django's
    system checks: ``(kind, key, message)`` with kind ``not_a_dict``,
    ``unknown``, ``invalid`` (type or range), ``inconsistent`` (values that
    do not go together), ``pool_invalid`` (a pool wrong on its own) or
    ``pools_conflict`` (pools that do not go together, or with the top-level
    options). The messages are ``build_config``'s."""
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
            elif isinstance(exc, _POOL_ERRORS):
                problems.append((exc.kind, key, str(exc)))
            elif str(exc).startswith("setting "):
                problems.append(("invalid", key, str(exc)))
    if not problems:
        try:
            build_config({}, environ={}, settings=settings)
        except _POOL_ERRORS as exc:
            problems.append((exc.kind, "pools", str(exc)))
        except ConfigError as exc:
            problems.append(("inconsistent", None, str(exc)))
    return problems


_POOL_ERRORS = (pool_options.PoolError, pool_options.PoolConflict)


def _rank(source: str) -> int:
    """A source's precedence: 0 for the command line, which wins."""
    if source.startswith("environment variable "):
        return 1
    return 2 if source.startswith("setting ") else 0


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
