"""The fleet health view: JSON from the fleet table, 200 healthy / 503 not.

    GET <prefix>/?host=H&queue=Q&min_children=N&limit=N

Reachable without a login, since probes and uptime checkers call it, so an
anonymous caller gets what a probe needs only: the status code, the status
word and the counts of fresh supervisors and children. The whole document
(host names, pids, memory, task names, job ids, problems; up to ``limit``
supervisors listed, 50 by default, 0 for all) goes to active
staff users and to a caller presenting the
``PROCRASTINATE_PREFORK_HEALTH_TOKEN`` setting as ``Authorization: Bearer
<token>``. Reads the table through the Django connection procrastinate uses
(``PROCRASTINATE_DATABASE_ALIAS``). It never shows job arguments, DSN or
password: the table holds none, and only whitelisted columns are shown.
"""

from __future__ import annotations

import hmac

from django.conf import settings as django_settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_variables

from ...fleet import health, status
from .settings import HEALTH_TOKEN
from .status import django_reader


def fleet_report(
    query: health.FleetQuery, *, listing: bool = True
) -> health.FleetHealth:
    """The fleet's health from the database (may raise a database error);
    without ``listing``, the verdict only (``status.judge``)."""
    from django.db import connections, transaction
    from procrastinate.contrib.django import settings as procrastinate_settings

    alias = procrastinate_settings.settings.DATABASE_ALIAS
    with transaction.atomic(using=alias):  # one now() for verdict and listing
        return status.judge(django_reader(connections[alias]), query, listing=listing)


#: what an anonymous caller sees of the document
PUBLIC_KEYS = ("status", "fresh_supervisors", "fresh_children")


@sensitive_variables("expected", "given")
def _token_matches(request: HttpRequest) -> bool:
    expected = getattr(django_settings, HEALTH_TOKEN, None)
    if not isinstance(expected, str) or not expected:
        return False  # no token set (or a bad one: the system check says so)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    # constant time: the comparison must not tell how much of a guess is right
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def shows_details(request: HttpRequest) -> bool:
    """Staff (active) or the token's bearer: the whole document."""
    user = getattr(request, "user", None)  # None without the auth middleware
    if user is not None and user.is_active and user.is_staff:
        return True
    return bool(_token_matches(request))  # the decorator loses the type


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
    details = shows_details(request)
    try:
        result = fleet_report(query, listing=details)
        document, code = result.as_dict(), 200 if result.healthy else 503
    except Exception as exc:  # the database is down or the table is missing
        from django.db import DatabaseError

        if not isinstance(exc, DatabaseError):
            raise
        document, code = (
            {
                "status": health.UNHEALTHY,
                "problems": [f"cannot read the fleet table: {type(exc).__name__}"],
            },
            503,
        )
    if not details:
        document = {key: document[key] for key in PUBLIC_KEYS if key in document}
    return JsonResponse(document, status=code)
