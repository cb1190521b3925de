"""The logging options of the option table (``options.OPTIONS`` ends with them):
log level, line format and procrastinate's deprecated -v."""

from __future__ import annotations

from .declaration import Option
from .parsing import choice, int_between, non_empty_str, optional

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"

LOGGING_OPTIONS: tuple[Option, ...] = (
    Option(
        "log_level",
        ("--log-level",),
        optional(choice(*LOG_LEVELS)),
        None,
        "Log level of the supervisor and children (procrastinate's --log-level): "
        "of the root, procrastinate and procrastinate_prefork loggers, also "
        "under Django's LOGGING (unset, LOGGING's levels stay). "
        "run_worker() sets only the procrastinate_prefork logger's level.",
        env=("PROCRASTINATE_LOG_LEVEL",),
        default_doc="`info`, or Django's `LOGGING`",
        metavar="{" + ",".join(LOG_LEVELS) + "}",
    ),
    # procrastinate's CLI logging options, with the same names and variables.
    Option(
        "log_format",
        ("--log-format",),
        non_empty_str,
        DEFAULT_LOG_FORMAT,
        "Format of the log lines (Python logging's LogRecord attributes), or "
        "json: one JSON object per line. Under Django's LOGGING, given (not "
        "left to its default), it replaces the formatter of the root logger's "
        "handlers and of procrastinate's loggers' handlers. "
        "Not used by run_worker(), which leaves logging to its caller.",
        env=("PROCRASTINATE_LOG_FORMAT",),
        metavar="FORMAT",
    ),
    Option(
        "log_format_style",
        ("--log-format-style",),
        choice("%", "{", "$"),
        "%",
        "Style of --log-format: %, { or $ (Python logging's styles).",
        env=("PROCRASTINATE_LOG_FORMAT_STYLE",),
        metavar="STYLE",
    ),
    Option(
        "verbose",
        ("-v", "--verbose"),
        int_between(0, 100),
        0,
        "Deprecated (as in procrastinate): -v means --log-level debug; "
        "--log-level wins over it. Under manage.py only --verbose: -v is Django's "
        "--verbosity.",
        env=("PROCRASTINATE_VERBOSE",),
        count=True,
        default_doc="`0`",
    ),
)
