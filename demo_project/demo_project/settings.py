"""Settings of the procrastinate-prefork demo project (Django 4.2+).

The database comes from the ``DATABASE_URL`` environment variable
(``postgresql://user:password@host:port/dbname?sslmode=...``); without it, the
throwaway PostgreSQL of ``scripts/pg.sh`` is assumed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "django-insecure-demo-only-do-not-use-in-production"
)
DEBUG = False
ALLOWED_HOSTS = ["*"]

# DEMO_WITHOUT_PREFORK=1 leaves procrastinate_prefork's Django app (and its URLs)
# out: plain procrastinate only. Handy to compare, or to debug the project itself.
DEMO_WITHOUT_PREFORK = os.environ.get("DEMO_WITHOUT_PREFORK", "") == "1"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "procrastinate.contrib.django",
    *([] if DEMO_WITHOUT_PREFORK else ["procrastinate_prefork.contrib.django"]),
    "demo_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo_project.urls"
WSGI_APPLICATION = "demo_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def database_from_url(url: str) -> dict[str, Any]:
    """A Django DATABASES entry from a libpq-style URL.

    ``postgresql://user:password@host:port/dbname?sslmode=require``; every part
    but the scheme is optional, user and password may be percent-encoded, an
    empty host means libpq's default (unix socket), and query parameters
    (sslmode, connect_timeout, ...) are handed to the driver as OPTIONS.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {url!r}")
    # Not parts.hostname: it lowercases, which breaks socket directory paths.
    hostport = parts.netloc.rpartition("@")[2]
    if hostport.startswith("["):  # IPv6 literal
        host = hostport[1 : hostport.find("]")]
    else:
        host = hostport.partition(":")[0]
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        # A host may be percent-encoded, e.g. a socket dir: %2Fvar%2Frun%2Fpostgresql
        "HOST": unquote(host),
        "PORT": str(parts.port or ""),
        "OPTIONS": dict(parse_qsl(parts.query)),
        # Persistent connections: with Django's default of 0, every job would
        # open a new PostgreSQL connection (procrastinate closes "old"
        # connections around each job, the way Django does around a request).
        "CONN_MAX_AGE": 600,
        # ...and check a kept connection before reusing it, so one that died
        # (e.g. PostgreSQL restarted) is replaced instead of failing a job.
        "CONN_HEALTH_CHECKS": True,
    }


DATABASES = {
    "default": database_from_url(
        os.environ.get(
            "DATABASE_URL",
            "postgresql://postgres@127.0.0.1:"
            f"{os.environ.get('PGPORT_THROWAWAY', '54329')}/postgres",
        )
    )
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# procrastinate-prefork settings (supervisor, children, heartbeats, probe port...).
# Empty: the defaults. The keys are documented in docs/.
PROCRASTINATE_PREFORK: dict[str, Any] = {}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["console"], "level": "INFO"},
    # procrastinate logs "Adding tasks from blueprint" at every start (twice).
    "loggers": {"procrastinate.blueprints": {"level": "WARNING"}},
}
