"""Every named query parses and plans against the real schema."""

from __future__ import annotations

import re

import psycopg
import pytest

from procrastinate_prefork.fleet import queries


@pytest.mark.parametrize("name", sorted(queries.QUERIES))
def test_query_plans(db: psycopg.Connection, name: str) -> None:
    statement = queries.get(name)
    named = sorted(set(re.findall(r"%\((\w+)\)s", statement)))
    params: object
    if named:
        params = dict.fromkeys(named)
    else:
        params = [None] * statement.count("%s")
    with db.transaction(force_rollback=True):
        plan = db.execute("EXPLAIN " + statement, params).fetchall()  # type: ignore[arg-type]
    assert plan
