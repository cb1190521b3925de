"""The SQL of our own tables, shipped with the package."""

from __future__ import annotations

import importlib.resources

import psycopg

from . import queries

REQUIRED_TABLES = (
    "procrastinate_prefork_processes",
    "procrastinate_prefork_job_crashes",
    "procrastinate_prefork_sweep",
    "procrastinate_prefork_events",
)


def schema_sql() -> str:
    return (
        importlib.resources.files("procrastinate_prefork")
        .joinpath("sql/schema.sql")
        .read_text()
    )


def drop_sql() -> str:
    return (
        importlib.resources.files("procrastinate_prefork")
        .joinpath("sql/drop.sql")
        .read_text()
    )


def apply(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute(schema_sql())


def missing_tables(conn: psycopg.Connection) -> list[str]:
    """Tables of procrastinate and of ours that are not in the database."""
    names = ("procrastinate_jobs", "procrastinate_workers", *REQUIRED_TABLES)
    row = conn.execute(
        queries.get("missing_tables"),
        [list(names)],
    ).fetchone()
    return list(row[0] or []) if row else list(names)
