"""``procrastinate-prefork``: the command line for plain procrastinate apps.

    procrastinate-prefork --app mypkg.tasks.app worker --concurrency 4
    procrastinate-prefork --app mypkg.tasks.app schema --apply

The Django command ``manage.py prefork_worker`` shares the option table
(``config.OPTIONS``) and ``launcher.run_fleet``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from . import __version__
from . import config as config_module
from .child.bootstrap import Bootstrap, BootstrapError, PlainBootstrap
from .config import arguments
from .config.parsing import ConfigError
from .errors import EXIT_STARTUP, EXIT_USAGE
from .launcher import run_fleet


class CommandParser(argparse.ArgumentParser):
    """The top-level parser and each command's; ``commands`` holds each
    command's parser, whose name an error about that command's arguments
    shows."""

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        arguments.exit_on_error(self, message)


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="procrastinate-prefork",
        description=(
            "Run procrastinate workers in a supervised pool of forked processes."
        ),
    )
    parser.add_argument(
        "-a",
        "--app",
        default=os.environ.get("PROCRASTINATE_APP"),
        help="Dotted path to the procrastinate App (env: PROCRASTINATE_APP).",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    worker = commands.add_parser("worker", help="Run the supervisor and its children.")
    arguments.add_arguments(worker)
    schema = commands.add_parser("schema", help="Create or show the prefork tables.")
    status = commands.add_parser(
        "status", help="Show the fleet (from the fleet table); exit 1 when unhealthy."
    )
    for command in (worker, schema, status):
        # --app also after the command, as people type it; the one before
        # the command stays unless repeated here.
        command.add_argument(
            "-a",
            "--app",
            default=argparse.SUPPRESS,
            help="The same as --app before the command.",
        )
    parser.commands = {"worker": worker, "schema": schema, "status": status}
    action = schema.add_mutually_exclusive_group(required=True)
    action.add_argument("--apply", action="store_true", help="Create the tables.")
    action.add_argument(
        "--print", action="store_true", dest="print_sql", help="Print the SQL."
    )
    from .fleet import status as status_module

    status_module.add_arguments(status)
    return parser


def main(
    argv: Sequence[str] | None = None, *, settings: Mapping[str, Any] | None = None
) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        command = parser.commands.get(args.command, parser)
        command.error("unrecognized arguments: " + " ".join(extras))
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(
            f"{parser.prog}: error: a command is required (worker, schema, status)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.command == "schema" and args.print_sql:
        from .fleet import schema

        sys.stdout.write(schema.schema_sql())
        return 0
    if not args.app:
        print(
            f"{parser.prog}: error: --app (or PROCRASTINATE_APP) is required",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        if args.command == "worker":
            config = config_module.build_config(
                arguments.cli_values_from_namespace(args), settings=settings
            )
        sys.path.insert(0, os.getcwd())
        bootstrap = PlainBootstrap(args.app)
    except (ConfigError, BootstrapError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "schema":
        return _apply_schema(bootstrap)
    if args.command == "status":
        return _status(bootstrap, args)
    return run_fleet(config, bootstrap)


def _status(bootstrap: Bootstrap, args: argparse.Namespace) -> int:
    from .fleet import health, status
    from .supervisor import db

    try:
        query = status.query_from_args(args)
    except health.QueryError as exc:
        print(f"procrastinate-prefork: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    with contextlib.ExitStack() as stack:
        readers: list[status.Reader] = []

        def read(statement: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
            # connected at the first read (its failure is report's one line);
            # one transaction for all of them: the verdict's now() and the
            # listing's are the same
            if not readers:
                conn = db.connect(bootstrap.connection_args(), "prefork:status")
                readers.append(status.psycopg_reader(stack.enter_context(conn)))
            return readers[0](statement, params)

        return status.report(
            read,
            query,
            as_json=args.as_json,
            check=args.check,
            out=sys.stdout,
            err=sys.stderr,
            schema_hint=bootstrap.schema_hint("prefork"),
        )


def _apply_schema(bootstrap: Bootstrap) -> int:
    from . import errors
    from .fleet import schema
    from .observability import redact
    from .supervisor import db

    def fail(what: str, exc: Exception, hint: str = "") -> int:
        first_line = redact.without_secrets(
            errors.one_line(exc), bootstrap.connection_args()
        )
        print(
            f"procrastinate-prefork: error: {what}: {first_line}{hint}",
            file=sys.stderr,
        )
        return EXIT_STARTUP

    try:
        conn = db.connect(bootstrap.connection_args(), "prefork:schema")
    except Exception as exc:  # psycopg errors: one line for the user
        hint = "; " + bootstrap.connection_hint()
        return fail("cannot connect to the database", exc, hint)
    try:
        with conn:
            if any(
                not name.startswith("procrastinate_prefork")
                for name in schema.missing_tables(conn)
            ):
                print(
                    "procrastinate-prefork: error: procrastinate's schema must be "
                    f"there first: {bootstrap.schema_hint('procrastinate')}",
                    file=sys.stderr,
                )
                return EXIT_STARTUP
            schema.apply(conn)
    except Exception as exc:  # psycopg errors: one line for the user
        return fail("cannot apply the schema", exc)
    print("procrastinate-prefork tables created (or already present)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
