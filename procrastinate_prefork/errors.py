"""One-line error messages.

Database and connection errors often span several lines (psycopg adds
``DETAIL``/``HINT`` lines and context); logs and the command line show only the
first one, so that one error stays one line."""

from __future__ import annotations

#: exit codes of the commands: bad input (as argparse), the fleet cannot start
EXIT_USAGE = 2
EXIT_STARTUP = 1


def one_line(exc: BaseException) -> str:
    """The first non-empty line of ``exc``, or its type name when it has none."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
