"""Fixtures: a fresh PostgreSQL database per test (cloned from a template that
holds procrastinate's schema and ours), and a handle on a running fleet."""

from __future__ import annotations

import contextlib
import errno
import importlib
import importlib.util
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from procrastinate import schema as procrastinate_schema

from procrastinate_prefork.fleet import schema as prefork_schema

from .fleet_helper import REPO, Fleet, FleetFactory

DJANGO_SETTINGS = "tests.django_project.settings"


def pytest_configure(config: pytest.Config) -> None:
    """pytest-django for the in-process Django tests, with the settings of
    tests/django_project, set here rather than through DJANGO_SETTINGS_MODULE:
    that variable would reach every process the tests start. Without Django
    (the nodjango tox env) nothing is configured and those tests skip."""
    if importlib.util.find_spec("django") is None or os.environ.get(
        "DJANGO_SETTINGS_MODULE"
    ):
        return
    from django.conf import settings

    if settings.configured:
        return
    sys.path.insert(0, str(REPO / "demo_project"))  # the demo's apps and settings
    module = importlib.import_module(DJANGO_SETTINGS)
    values = {name: getattr(module, name) for name in dir(module) if name.isupper()}
    # pytest-django's test database: unique, so that runs in parallel on one
    # server (tox -p) do not drop each other's.
    values["DATABASES"]["default"]["TEST"] = {
        "NAME": f"test_prefork_{uuid.uuid4().hex[:12]}"
    }
    settings.configure(**values)


def _with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@pytest.fixture(scope="session")
def pg_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        pytest.fail("DATABASE_URL is not set: run the tests with scripts/test.sh")
    return url


@contextlib.contextmanager
def fresh_database(
    pg_url: str, prefix: str, template_url: str | None = None
) -> Iterator[str]:
    """A new database (a copy of the one at ``template_url`` if given), dropped
    afterwards. Unique names: test runs in parallel (``tox -p``) on one server
    do not drop each other's databases."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    template = (
        f" TEMPLATE {urlsplit(template_url).path.lstrip('/')}" if template_url else ""
    )
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}{template}")
    try:
        yield _with_dbname(pg_url, name)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def template_url(pg_url: str) -> Iterator[str]:
    """procrastinate's schema and ours, applied by SQL; cloned by ``db_url``."""
    with fresh_database(pg_url, "prefork_template") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(procrastinate_schema.SchemaManager.get_schema())  # type: ignore[arg-type]
            prefork_schema.apply(conn)
        yield url


@pytest.fixture
def db_url(pg_url: str, template_url: str) -> Iterator[str]:
    with fresh_database(pg_url, "prefork_test", template_url) as url:
        yield url


@pytest.fixture
def empty_db_url(pg_url: str) -> Iterator[str]:
    """A database with no schema at all."""
    with fresh_database(pg_url, "prefork_empty") as url:
        yield url


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def fleet_factory(request, db_url: str, tmp_path) -> Iterator[FleetFactory]:
    factory = FleetFactory(db_url, tmp_path)
    yield factory
    factory.cleanup()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for fleet in factory.fleets:  # shown by pytest with the failure
            print(f"----- log of fleet {fleet.name} -----")
            print("\n".join(fleet.log().splitlines()[-60:]))


@pytest.fixture
def fleet(fleet_factory: FleetFactory) -> Fleet:
    """Not started: call ``fleet.start(...)``."""
    return fleet_factory.new()


@pytest.fixture
def full_disk(tmp_path) -> Iterator[Path]:
    """A directory on a 64 KiB tmpfs that is already full: writing there fails
    with ENOSPC (skipped only where mounting is impossible)."""
    mount = tmp_path / "small-tmpfs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        with open(mount / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
