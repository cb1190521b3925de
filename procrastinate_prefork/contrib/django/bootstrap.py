"""The fleet's bootstrap for a Django project (``manage.py prefork_worker``)."""

from __future__ import annotations

from typing import Any

import procrastinate

from ...child import bootstrap


class DjangoBootstrap(bootstrap.Bootstrap):
    """For ``manage.py prefork_worker``: Django is set up by manage.py."""

    description = "Django project"

    def __init__(self) -> None:
        from procrastinate.contrib.django import settings as proc_settings

        self.alias = proc_settings.settings.DATABASE_ALIAS

    @property
    def app(self) -> procrastinate.App:
        from procrastinate.contrib.django import app

        return app

    def schema_hint(self, tables: str) -> str:
        return "run `manage.py migrate`"

    def connection_hint(self) -> str:
        return f"check DATABASES[{self.alias!r}] in the Django settings"

    def connection_args(self) -> dict[str, Any]:
        from procrastinate.contrib.django.utils import connector_params

        return self.pooler_safe({"kwargs": connector_params(self.alias)})

    def before_fork(self) -> None:
        from django.db import connections

        # The connections opened in asgiref's thread-sensitive thread (async
        # ORM) belong to that thread: close them there, then stop it.
        bootstrap._release_asgiref_executor(in_its_thread=connections.close_all)
        connections.close_all()
        # Every alias, not only those this thread initialized: a pool is shared
        # by all threads (class-level), and the async ORM may have opened it.
        for conn in connections.all():
            pools = getattr(type(conn), "_connection_pools", None)  # Django 5.1+
            if pools and conn.alias in pools:
                # An open psycopg pool runs threads and holds sessions.
                conn.close_pool()

    def after_fork_in_child(self, application_name: str | None = None) -> None:
        from django.db import connections

        if application_name:
            # the child's own ORM sessions are named like its pool's
            for settings_dict in connections.settings.values():
                if "postgresql" in settings_dict.get("ENGINE", ""):
                    options = settings_dict.setdefault("OPTIONS", {})
                    options["application_name"] = application_name
                    if self.transaction_pooled:
                        # QuerySet.iterator()'s cursor would outlive its
                        # transaction, on a server session the pooler then
                        # lends to another client. (Django already turns
                        # psycopg's prepared statements off by default.)
                        settings_dict["DISABLE_SERVER_SIDE_CURSORS"] = True
                    if options.get("pool"):
                        # one pool per child: psycopg_pool's default of 4
                        # sessions each would multiply by the fleet size
                        pool = {} if options["pool"] is True else dict(options["pool"])
                        pool.setdefault("min_size", 1)
                        options["pool"] = pool
        for conn in connections.all(initialized_only=True):
            # Never close(): that would send a Terminate message on a socket the
            # parent may still use. Dropping the reference is enough.
            conn.connection = None
            pools = getattr(type(conn), "_connection_pools", None)
            if pools:
                pools.clear()
