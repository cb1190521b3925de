"""The command-line side of the option table: argparse arguments for every
option (the CLI's worker command and the Django command), their help, hints for
mistyped flags, and the values given back from a parsed namespace."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from .declaration import Option
from .table import OPTIONS


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


def exit_on_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    """argparse's error without its usage first: the worker's usage is 30
    lines, and the one that matters (with the flag meant) came last. One
    line, exit 2."""
    message = suggest_flags(parser, message)
    if "did you mean" not in message:
        message += f" (see {parser.prog} --help)"
    parser.exit(2, f"{parser.prog}: error: {message}\n")


def cli_values_from_namespace(
    namespace: argparse.Namespace | Mapping[str, Any],
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    data = vars(namespace) if isinstance(namespace, argparse.Namespace) else namespace
    names = names or [option.name for option in OPTIONS]
    return {name: data[name] for name in names if name in data}
