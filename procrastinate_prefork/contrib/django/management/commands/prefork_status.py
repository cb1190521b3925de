"""``manage.py prefork_status``: the fleet as a table, ``--json``, ``--check``."""

from __future__ import annotations

import argparse
import sys
from typing import Any, ClassVar

from django.core.management.base import BaseCommand, CommandError

from ..... import errors
from .....fleet import health, status
from ...status import django_reader


class Command(BaseCommand):
    help = "Show the procrastinate-prefork fleet; exits 0 when healthy, 1 when not."
    requires_system_checks: ClassVar[list[str]] = []

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        status.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        from django.db import connections
        from procrastinate.contrib.django import settings as procrastinate_settings

        try:
            query = status.query_from_args(options)
        except health.QueryError as exc:
            raise CommandError(str(exc), returncode=errors.EXIT_USAGE) from None
        connection = connections[procrastinate_settings.settings.DATABASE_ALIAS]
        code = status.report(
            django_reader(connection),
            query,
            as_json=options["as_json"],
            check=options["check"],
            out=self.stdout,
            err=self.stderr,
            schema_hint="run `manage.py migrate`",
        )
        self.stdout.flush()
        if code:
            sys.exit(code)
