"""The fleet health view: JSON from the fleet table, 200 healthy / 503 not.

    GET <prefix>/?host=H&queue=Q&min_children=N

Reads the table through the Django connection procrastinate uses
(``PROCRASTINATE_DATABASE_ALIAS``). It shows no job arguments, DSN or
password: the table holds none, and only whitelisted columns are shown.
Protect it like any monitoring endpoint (it lists host names and task names).
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from ... import health, snapshot
from .status import fetch_rows_django


def fleet_report(query: health.FleetQuery) -> health.FleetHealth:
    """The fleet's health from the database (may raise a database error)."""
    from django.db import connections
    from procrastinate.contrib.django import settings as procrastinate_settings

    alias = procrastinate_settings.settings.DATABASE_ALIAS
    rows = fetch_rows_django(connections[alias])
    return health.fleet_health(snapshot.from_rows(rows), query)


@csrf_exempt  # so that every other method gets 405, not a CSRF 403
@never_cache
def fleet_health(request: HttpRequest) -> JsonResponse:
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse(
            {"status": "error", "error": f"method {request.method} not allowed"},
            status=405,
        )
        response["Allow"] = "GET, HEAD"
        return response
    try:
        query = health.FleetQuery.from_params(dict(request.GET.lists()))
    except health.QueryError as exc:
        return JsonResponse({"status": "error", "error": str(exc)}, status=400)
    try:
        result = fleet_report(query)
    except Exception as exc:  # the database is down or the table is missing
        from django.db import DatabaseError

        if not isinstance(exc, DatabaseError):
            raise
        return JsonResponse(
            {
                "status": health.UNHEALTHY,
                "problems": [f"cannot read the fleet table: {type(exc).__name__}"],
            },
            status=503,
        )
    return JsonResponse(result.as_dict(), status=200 if result.healthy else 503)
