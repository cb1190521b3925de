"""``scripts/pg.sh psql``: psql on the throwaway server, with psql's own
arguments. Run against the tests' server (DATABASE_URL) when it is one that
pg.sh could have started: 127.0.0.1, user postgres, no password; pg.sh finds
it by its port (PGPORT_THROWAWAY)."""

from __future__ import annotations

import os
import subprocess
from urllib.parse import urlsplit

import pytest

from ..fleet_helper import REPO

PG_SH = REPO / "scripts" / "pg.sh"


def pg_sh_psql(pg_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    server = urlsplit(pg_url)
    if server.hostname != "127.0.0.1" or server.password:
        pytest.skip("DATABASE_URL is not a server pg.sh reaches (127.0.0.1, trust)")
    if (server.username or "postgres") != "postgres":
        pytest.skip("DATABASE_URL's user is not pg.sh's superuser, postgres")
    return subprocess.run(
        [str(PG_SH), "psql", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "PGPORT_THROWAWAY": str(server.port or 5432),
            # a caller's libpq variables must not send psql elsewhere
            "PGHOST": "/nonexistent",
            "PGUSER": "nobody",
            "PGDATABASE": "nowhere",
        },
    )


@pytest.mark.parametrize("how", ["-d", "--dbname=", "positional"])
def test_psql_connects_to_the_database_its_arguments_name(pg_url, empty_db_url, how):
    name = urlsplit(empty_db_url).path.lstrip("/")
    database = {"-d": ["-d", name], "--dbname=": [f"--dbname={name}"]}.get(how, [name])
    result = pg_sh_psql(
        pg_url, *database, "-X", "-A", "-t", "-c", "select current_database()"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [name]


def test_psql_defaults_to_the_postgres_database(pg_url):
    result = pg_sh_psql(pg_url, "-XAt", "-c", "select current_database(), current_user")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["postgres|postgres"]
