"""An app whose task modules do not import (a typo in import_paths)."""

from __future__ import annotations

import os

import procrastinate

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ.get("DATABASE_URL", "")
    ),
    import_paths=["tests.apps.no_such_tasks_module"],
)
