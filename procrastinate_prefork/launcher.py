"""Between the entry points and the supervisor.

The command line (``cli``), the Django command (``manage.py prefork_worker``)
and the Python API (``run_worker``) all start a fleet here: logging set-up,
the banner, start-up errors and exit codes live in this one place, so the
library does not depend on its command line.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from . import __version__
from .child.bootstrap import Bootstrap, register_fork_hooks
from .config import PreforkConfig
from .config.parsing import ConfigError, resolve_hook
from .errors import EXIT_STARTUP, EXIT_USAGE
from .observability import jsonlog, metrics

logger = logging.getLogger("procrastinate_prefork")


def log_formatter(config: PreforkConfig) -> logging.Formatter:
    """Raises ConfigError for a format its style cannot use."""
    if config.log_format == jsonlog.FORMAT:
        return jsonlog.JsonFormatter()
    try:
        return logging.Formatter(config.log_format, style=config.log_format_style)
    except ValueError as exc:
        raise ConfigError(
            f"--log-format: not a valid {config.log_format_style!r}-style format: {exc}"
        ) from None


def setup_logging(config: PreforkConfig) -> None:
    """procrastinate's logging options. On a process whose logging nobody set
    up, a stderr handler with them. When it is set up already (Django's
    LOGGING), only what the user gave explicitly (command line, environment
    or settings) applies: a --log-format replaces the formatter of the fleet's
    handlers, a --log-level (or -v) sets the fleet's loggers' levels; the
    rest of LOGGING stays."""
    formatter = log_formatter(config)
    level = config.effective_log_level
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        root.addHandler(handler)
        root.setLevel((level or "info").upper())
    else:
        if "log_format" in config.given:
            for fleet_handler in _fleet_handlers():
                fleet_handler.setFormatter(formatter)
        if level:
            # as without LOGGING, where the level is the root logger's; the
            # loggers LOGGING names below these keep their own levels
            for name in ("", "procrastinate"):
                logging.getLogger(name).setLevel(level.upper())
    _package_level(config)


#: the loggers whose records make the fleet's output, besides the root's
FLEET_LOGGERS = ("procrastinate", "procrastinate_prefork")


def _fleet_handlers() -> list[logging.Handler]:
    """The handlers of the root logger and of procrastinate's and ours (and
    of their descendants): every handler the fleet's records reach."""
    loggers = [logging.getLogger()] + [
        item
        for name, item in logging.Logger.manager.loggerDict.items()
        if isinstance(item, logging.Logger) and name.split(".")[0] in FLEET_LOGGERS
    ]
    handlers: dict[int, logging.Handler] = {}
    for item in loggers:
        for handler in item.handlers:
            handlers[id(handler)] = handler
    return list(handlers.values())


def _package_level(config: PreforkConfig) -> None:
    level = config.effective_log_level
    if level:
        logging.getLogger("procrastinate_prefork").setLevel(level.upper())
    if config.verbose:
        logger.warning(
            "-v/--verbose (PROCRASTINATE_VERBOSE) is deprecated, as in procrastinate: "
            "use --log-level (PROCRASTINATE_LOG_LEVEL)",
            extra={"action": "deprecated_option", "option": "verbose"},
        )


def _print_error(message: str, code: int) -> None:
    print(f"procrastinate-prefork: error: {message}", file=sys.stderr)


def run_fleet(
    config: PreforkConfig,
    bootstrap: Bootstrap,
    on_error: Callable[[str, int], None] = _print_error,
    configure_logging: bool = True,
) -> int:
    """Start the supervisor and run it until it stops. Returns the exit code.
    A start-up error goes to ``on_error(message, exit_code)`` first (Django's
    command raises its CommandError there). Without ``configure_logging`` (the
    Python API) the root logger is left to the caller: only an explicit
    log level is applied, to the ``procrastinate_prefork`` logger."""
    from .supervisor.arbiter import StartupError, Supervisor

    register_fork_hooks()
    try:
        if configure_logging:
            setup_logging(config)
        else:
            _package_level(config)
        on_child_start = resolve_hook("on_child_start", config.on_child_start)
        on_child_exit = resolve_hook("on_child_exit", config.on_child_exit)
    except ConfigError as exc:
        on_error(str(exc), EXIT_USAGE)
        return EXIT_USAGE
    supervisor = Supervisor(
        config, bootstrap, on_child_start=on_child_start, on_child_exit=on_child_exit
    )
    print(jsonlog.banner(banner(config, bootstrap)), file=sys.stderr, flush=True)
    try:
        return supervisor.run()
    except StartupError as exc:
        on_error(str(exc), EXIT_STARTUP)
        return EXIT_STARTUP


def banner(config: PreforkConfig, bootstrap: Bootstrap) -> str:
    """The effective configuration, printed to stderr at start-up."""
    queues = ", ".join(config.queues) if config.queues else "all queues"
    limit = f"{config.job_timeout:g} s" if config.job_timeout else "none"
    soft = f"{config.soft_job_timeout:g} s" if config.soft_job_timeout else "none"
    recycle = []
    if config.max_jobs_per_child:
        recycle.append(
            f"{config.max_jobs_per_child} jobs (+0..{config.max_jobs_jitter})"
        )
    if config.max_memory_per_child:
        recycle.append(f"{config.max_memory_per_child} MiB resident")
    if config.listen_notify:
        listen = "one LISTEN session, children woken by pipe"
    else:
        listen = (
            f"off (the supervisor polls every {config.fetch_job_polling_interval:g} s)"
        )
    lines = [
        (f"procrastinate-prefork {__version__} -- {bootstrap.description}"),
        f"  host:          {config.hostname} (supervisor pid {os.getpid()})",
        (
            f"  children:      {config.concurrency} x {config.child_concurrency}"
            " job(s) at once"
        ),
        f"  queues:        {queues}",
        f"  wait:          {'yes' if config.wait else 'no (one-shot)'}",
        f"  listen/notify: {listen}",
    ]
    if config.listen_dsn and config.listen_notify:
        lines[-1] += " (session on --listen-dsn)"
    lines += [
        f"  graceful stop: {config.shutdown_graceful_timeout:g} s (shared deadline)",
        (
            f"  stalled after: {config.stalled_timeout:g} s; "
            f"heartbeat every {config.heartbeat_interval:g} s"
        ),
        f"  wedged after:  {config.child_timeout:g} s; job time limit: {limit}"
        + (f" ({len(config.task_timeouts)} per-task)" if config.task_timeouts else ""),
        f"  soft limit:    {soft}"
        + (
            f" ({len(config.task_soft_timeouts)} per-task)"
            if config.task_soft_timeouts
            else ""
        ),
        f"  crash retries: {config.max_crash_retries}",
        "  recycle after: " + (", ".join(recycle) or "never"),
    ]
    if config.autoscale:
        lines[2] = (
            f"  children:      autoscale {config.autoscale[0]}..{config.autoscale[1]}"
            f" x {config.child_concurrency} job(s) at once"
        )
    if config.pools:  # the children and queues of each pool instead
        lines[2:4] = [
            f"  pool {spec.name}: {_pool_line(spec.config)}" for spec in config.pools
        ]
    if config.health_port:
        lines.append(
            f"  probe port:    {config.health_host}:{config.health_port} "
            "(/live, /ready, /status, /metrics)"
        )
        lines.append(
            "  metrics:       "
            + (
                "on (/metrics)"
                if metrics.available()
                else "off (pip install 'procrastinate-prefork[metrics]')"
            )
        )
    return "\n".join(lines)


def _pool_line(config: PreforkConfig) -> str:
    """A pool's size and queues in the banner."""
    queues = ", ".join(config.queues) if config.queues else "all queues"
    size = (
        f"autoscale {config.autoscale[0]}..{config.autoscale[1]}"
        if config.autoscale
        else str(config.concurrency)
    )
    return f"{size} x {config.child_concurrency} job(s) at once; queues: {queues}"
