"""The fleet table read through a Django database connection."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...fleet.status import Reader


def django_reader(connection: Any) -> Reader:
    """``status.psycopg_reader``, through Django's connection."""

    def read(statement: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    return read
