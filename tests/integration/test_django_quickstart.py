"""The Django quickstart, literally, on the installed Django: a project made by
``django-admin startproject`` with the tutorial's ``INSTALLED_APPS`` (no
``django.contrib.postgres``) and a database over TCP (step 3, ways B and C)
passes ``check``, ``migrate`` (applying the migrations of ours that step 5
lists) and ``makemigrations --check``; a database migrated by 0.1.0 (only
``procrastinate_prefork.0001_initial``) migrates on and keeps its rows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

pytest.importorskip("django")  # the tox env without Django skips this module

from ..conftest import fresh_database
from ..fleet_helper import REPO

TUTORIAL = REPO / "docs" / "tutorials" / "quickstart-django.md"

# docs/tutorials/quickstart-django.md, step 3
QUICKSTART_APPS = """
INSTALLED_APPS = [
    'django.contrib.admin',
    'django.contrib.auth',
    'django.contrib.contenttypes',
    'django.contrib.sessions',
    'django.contrib.messages',
    'django.contrib.staticfiles',
    'procrastinate.contrib.django',
    'procrastinate_prefork.contrib.django',
    'shop',
]
"""


def _run(
    project: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
            "PYTHONPATH": str(REPO),
        },
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def quickstart(pg_url: str, tmp_path: Path):
    """A fresh project as the tutorial makes it, on a fresh empty database."""
    project = tmp_path / "qs"
    project.mkdir()
    _run(project, "-m", "django", "startproject", "mysite", ".")
    _run(project, "manage.py", "startapp", "shop")
    with fresh_database(pg_url, "prefork_quickstart") as url:
        parts = urlsplit(url)
        settings = project / "mysite" / "settings.py"
        settings.write_text(
            settings.read_text()
            + QUICKSTART_APPS
            + (
                "DATABASES = {'default': {"
                "'ENGINE': 'django.db.backends.postgresql', "
                f"'NAME': {parts.path.lstrip('/')!r}, 'USER': "
                f"{parts.username or ''!r}, "
                f"'PASSWORD': {parts.password or ''!r}, 'HOST': {parts.hostname!r}, "
                f"'PORT': {str(parts.port or '')!r}}}}}\n"
            )
        )
        yield project, url


def _our_migrations(text: str) -> list[str]:
    return re.findall(r"Applying (procrastinate_prefork\.\w+)\.\.\. OK", text)


def test_quickstart_checks_and_migrates(quickstart):
    project, url = quickstart
    check = _run(project, "manage.py", "check", check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "postgres.E005" not in check.stderr
    migrate = _run(project, "manage.py", "migrate")
    # step 5 lists what migrate applies of ours
    assert _our_migrations(migrate.stdout) == _our_migrations(TUTORIAL.read_text())
    _run(project, "manage.py", "makemigrations", "--check", "--dry-run")
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT to_regclass('procrastinate_prefork_processes') IS NOT NULL"
        ).fetchone() == (True,)


def test_database_of_0_1_0_migrates_on(quickstart):
    """0.1.0 had only 0001_initial: its state-only successors apply cleanly
    and leave the table and its rows alone."""
    project, url = quickstart
    _run(project, "manage.py", "migrate", "-v0", "procrastinate_prefork", "0001")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO procrastinate_prefork_processes (kind, host, pid, state, "
            "queues) VALUES ('supervisor', 'old-host', 1, 'running', '{a,b}')"
        )
    _run(project, "manage.py", "migrate", "-v0")
    plan = _run(project, "manage.py", "showmigrations", "procrastinate_prefork").stdout
    assert "[ ]" not in plan and "[X] 0001_initial" in plan, plan
    _run(project, "manage.py", "makemigrations", "--check", "--dry-run")
    read = _run(
        project,
        "manage.py",
        "shell",
        "-c",
        (
            "from procrastinate_prefork.contrib.django.models import FleetProcess; "
            "print('QUEUES', FleetProcess.objects.get(host='old-host').queues)"
        ),
    ).stdout
    assert "QUEUES ['a', 'b']" in read, read
