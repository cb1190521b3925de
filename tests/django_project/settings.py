"""Test settings: the demo project's, plus test tasks and variants.

Run ``demo_project/manage.py`` with ``DJANGO_SETTINGS_MODULE`` set to
``tests.django_project.settings`` and the repository root on ``PYTHONPATH``.

Variants, from environment variables:

- ``PREFORK_TEST_DJANGO_POOL=1``: Django 5.1+ connection pool (``OPTIONS["pool"]``).
- ``PREFORK_TEST_CONN_MAX_AGE=N``: ``CONN_MAX_AGE`` of the default database.
- ``PREFORK_TEST_PARENT_ASYNC_ORM=1``: procrastinate's ``ON_APP_READY`` hook uses
  Django's async ORM (asgiref's thread-sensitive executor) in the supervisor,
  before anything is forked.
- ``PREFORK_TEST_PREFORK_SETTINGS=<json>``: the ``PROCRASTINATE_PREFORK`` dict.
- ``PREFORK_TEST_PREFORK_FIRST=1``: our app listed before procrastinate's.
"""

from __future__ import annotations

import json
import os

from demo_project.settings import *  # noqa: F403
from demo_project.settings import DATABASES, INSTALLED_APPS

from tests.apps import events

from .middleware import record_runs

# The fleets' structured log records, for the tests (tests/apps/events.py);
# LOGGING below leaves the handler in place (disable_existing_loggers False).
events.install()

# Our own URLs: the tests must not depend on the demo's URL configuration.
ROOT_URLCONF = "tests.django_project.urls"

# Test tasks, registered on procrastinate's Django app next to the demo's.
PROCRASTINATE_IMPORT_PATHS = ["tests.django_project.tasks"]

if "PREFORK_TEST_CONN_MAX_AGE" in os.environ:
    DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ["PREFORK_TEST_CONN_MAX_AGE"])

if os.environ.get("PREFORK_TEST_DJANGO_POOL") == "1":
    # A pool needs CONN_MAX_AGE = 0 (Django refuses persistent connections).
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"]["pool"] = {"min_size": 1, "max_size": 2}

if os.environ.get("PREFORK_TEST_PARENT_ASYNC_ORM") == "1":
    PROCRASTINATE_ON_APP_READY = "tests.django_project.hooks.use_async_orm"

if os.environ.get("PREFORK_TEST_PREFORK_SETTINGS"):
    PROCRASTINATE_PREFORK = json.loads(os.environ["PREFORK_TEST_PREFORK_SETTINGS"])

if os.environ.get("PREFORK_TEST_PREFORK_FIRST") == "1":
    INSTALLED_APPS = [
        app for app in INSTALLED_APPS if app != "procrastinate_prefork.contrib.django"
    ]
    INSTALLED_APPS.insert(
        INSTALLED_APPS.index("procrastinate.contrib.django"),
        "procrastinate_prefork.contrib.django",
    )

# Records which process ran every job (see tests/django_project/middleware.py).
PROCRASTINATE_WORKER_DEFAULTS = {
    "worker_middleware": [record_runs],
}
