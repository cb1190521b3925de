"""The package's SQL statements, by name, from ``sql/queries.sql``.

The file holds blocks that start with a ``-- name --`` line and a one-line
comment saying what the statement does; the statement runs to the next block.
The tables themselves are in ``sql/schema.sql`` (and ``sql/drop.sql``)."""

from __future__ import annotations

import importlib.resources
import re

_HEADER = re.compile(r"^-- ([a-z_]+) --$")


def parse(text: str) -> dict[str, str]:
    """``{name: statement}``; raises ValueError on a block without its comment,
    an empty statement or a name given twice."""
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []

    def close() -> None:
        if name is None:
            return
        if not lines or not lines[0].startswith("-- "):
            raise ValueError(f"query {name!r}: no one-line comment under its name")
        statement = "\n".join(lines[1:]).strip()
        if not statement:
            raise ValueError(f"query {name!r}: no statement")
        if name in queries:
            raise ValueError(f"query {name!r}: defined twice")
        queries[name] = statement

    for line in text.splitlines():
        match = _HEADER.match(line)
        if match:
            close()
            name, lines = match.group(1), []
        elif name is not None:
            lines.append(line)
    close()
    return queries


def _load() -> dict[str, str]:
    files = importlib.resources.files("procrastinate_prefork")
    return parse(files.joinpath("sql/queries.sql").read_text())


QUERIES = _load()


def get(name: str) -> str:
    """The statement named ``name`` (KeyError for an unknown name)."""
    return QUERIES[name]
