"""The fleet rule as a django-health-check check (``pip install django-health-check``).

django-health-check 4.x (checks listed on the view)::

    from health_check.views import HealthCheckView

    path("ht/", HealthCheckView.as_view(checks=[
        "health_check.checks.Database",
        "procrastinate_prefork.contrib.django.health_check.PreforkFleetHealthCheck",
        # or tuned:
        # ("procrastinate_prefork...PreforkFleetHealthCheck", {"min_children": 4}),
    ])),

django-health-check 3.x (plugin registry): call ``register()`` from one of your
``AppConfig.ready()`` methods.

The rule is the health view's: unhealthy when no supervisor is fresh, fewer
than ``min_children`` children are fresh, or a supervisor is in a crash loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ...fleet import health

try:  # django-health-check 4.x
    from health_check.base import HealthCheck as _Base4
except ImportError:  # pragma: no cover - 3.x or not installed
    _Base4 = None

try:
    from health_check.exceptions import ServiceUnavailable
except ImportError as exc:  # pragma: no cover
    raise ImportError(
        "procrastinate_prefork.contrib.django.health_check needs django-health-check "
        "(pip install django-health-check)"
    ) from exc


def check_fleet(
    host: str | None = None, queue: str | None = None, min_children: int = 1
) -> None:
    """Raise ServiceUnavailable (message: the problems) unless healthy."""
    from django.db import DatabaseError

    from .views import fleet_report

    query = health.FleetQuery.build(host=host, queue=queue, min_children=min_children)
    try:
        result = fleet_report(query, listing=False)
    except DatabaseError as exc:
        raise ServiceUnavailable(
            f"cannot read the fleet table: {type(exc).__name__}"
        ) from None
    if not result.healthy:
        raise ServiceUnavailable("; ".join(result.problems))


if _Base4 is not None:

    @dataclasses.dataclass
    class PreforkFleetHealthCheck(_Base4):
        """Fresh supervisors, ``min_children`` fresh children or more, no crash loop."""

        host: str | None = None
        queue: str | None = None
        min_children: int = 1

        def run(self) -> None:
            from django.db import connections
            from procrastinate.contrib.django import settings as procrastinate_settings

            # Runs in an executor thread: close the connection it opens there.
            connection = connections[procrastinate_settings.settings.DATABASE_ALIAS]
            with connection.temporary_connection():
                check_fleet(self.host, self.queue, self.min_children)

else:  # pragma: no cover - django-health-check 3.x
    try:
        from health_check.backends import BaseHealthCheckBackend
    except ImportError:  # 3.20+ (the last for Django 4.2) renamed it
        from health_check.backends import HealthCheck as BaseHealthCheckBackend

    # ignore: the other branch's class, for django-health-check 3.x
    class PreforkFleetHealthCheck(BaseHealthCheckBackend):  # type: ignore[no-redef]
        critical_service = True
        host: str | None = None
        queue: str | None = None
        min_children = 1

        def check_status(self, subset: Any = None) -> None:
            try:
                check_fleet(self.host, self.queue, self.min_children)
            except ServiceUnavailable as exc:
                self.add_error(exc)

        def identifier(self) -> str:
            return "procrastinate-prefork fleet"

        def __repr__(self) -> str:  # what 3.20+ asks for instead of identifier()
            return self.identifier()


def register() -> None:
    """django-health-check 3.x: register the check with its plugin registry
    (call it from an ``AppConfig.ready()``). Not needed with 4.x."""
    from health_check.plugins import plugin_dir

    plugin_dir.register(PreforkFleetHealthCheck)
