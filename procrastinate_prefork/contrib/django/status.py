"""The fleet table read through a Django database connection."""

from __future__ import annotations

from typing import Any

from ...fleet import queries


def fetch_rows_django(connection: Any) -> list[dict[str, Any]]:
    """The rows ``status.fetch_rows_psycopg`` reads, through Django's connection."""
    with connection.cursor() as cursor:
        cursor.execute(queries.get("fleet_rows"), {"live_only": True})
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
