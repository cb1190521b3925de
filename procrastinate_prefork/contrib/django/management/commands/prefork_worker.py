"""``manage.py prefork_worker``: the prefork worker for a Django project."""

from __future__ import annotations

import argparse
import sys
from typing import Any, ClassVar

from django.core.management.base import BaseCommand, CommandError

from ..... import config as config_module
from .....config import arguments
from .....config.parsing import ConfigError
from .....launcher import run_fleet
from ...bootstrap import DjangoBootstrap
from ...settings import prefork_settings


class Command(BaseCommand):
    help = "Run procrastinate workers in a supervised pool of forked processes."
    requires_system_checks: ClassVar[list[str]] = []
    suppressed_base_arguments: ClassVar[set[str]] = {
        "--verbosity",
        "--traceback",
        "--no-color",
        "--force-color",
    }

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        error = parser.error

        def one_line_error(message: str) -> None:
            if parser.called_from_command_line:
                arguments.exit_on_error(parser, message)
            error(arguments.suggest_flags(parser, message))  # CommandError

        parser.error = one_line_error
        return parser

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        arguments.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            config = config_module.build_config(
                arguments.cli_values_from_namespace(options),
                settings=prefork_settings(),
            )
        except ConfigError as exc:
            raise CommandError(str(exc), returncode=2) from None
        code = run_fleet(config, DjangoBootstrap(), on_error=_raise_command_error)
        sys.stdout.flush()
        if code:
            sys.exit(code)


def _raise_command_error(message: str, code: int) -> None:
    # Django prints "CommandError: <message>" and exits with the code.
    raise CommandError(message, returncode=code)
