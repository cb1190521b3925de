"""The live fleet page of the admin and the JSON it refreshes itself from.

Staff only. The JSON holds the whitelisted fields of
``health.fleet_health`` (no job arguments, DSN or password: the fleet table
holds none) plus, per row, its stale mark and, per child, the admin URL of
its current job when procrastinate's own job admin is installed; and the
``dashboard``'s queues, jobs finished per minute and latest events (each
with its job's admin URL).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache

from ...fleet import health
from . import dashboard
from .views import fleet_report

JOB_ADMIN_URL = "admin:procrastinate_procrastinatejob_change"
REFRESH_SECONDS = 3


def job_admin_url(job_id: int) -> str | None:
    """procrastinate's admin page of the job, or None without that admin."""
    try:
        return str(reverse(JOB_ADMIN_URL, args=[job_id]))
    except NoReverseMatch:
        return None


def live_data(query: health.FleetQuery) -> dict[str, Any]:
    report = fleet_report(query)
    data = report.as_dict()
    supervisors = []
    for supervisor, entry in zip(report.supervisors, data["supervisors"], strict=True):
        children = []
        for child, shown in zip(supervisor.children, entry["children"], strict=True):
            stale = not health.is_fresh(supervisor, child)
            url = _job_url(child.job_id)
            children.append({**shown, "stale": stale, "job_url": url})
        supervisors.append({**entry, "stale": not entry["fresh"], "children": children})
    data["supervisors"] = supervisors
    now = timezone.now()
    data["generated_at"] = now.isoformat()
    conn = dashboard.connection()
    queues = dashboard.served_queues(conn, report.supervisors, query)
    data["queues"] = dashboard.queue_panel(conn, queues)
    data["finished_per_minute"] = dashboard.finished_per_minute(
        report.supervisors, now.timestamp()
    )
    data["events"] = [
        {**event, "job_url": _job_url(event["job_id"])}
        for event in dashboard.latest_events(conn, query)
    ]
    return data


def _job_url(job_id: int | None) -> str | None:
    return None if job_id is None else job_admin_url(job_id)


def _query(request: HttpRequest) -> health.FleetQuery:
    """Every supervisor selected is listed: the page's queues and jobs per
    minute are the listed supervisors' (no ``limit`` parameter here)."""
    params = dict(request.GET.lists())
    if "limit" in params:
        raise health.QueryError("parameter 'limit' is not known on the live page")
    return dataclasses.replace(health.FleetQuery.from_params(params), limit=0)


def staff_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Anonymous -> the admin login page; logged in but not staff -> 403
    (the admin's own decorator would send a non-staff user to a login loop)."""

    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = request.user
        if user.is_authenticated and not (user.is_active and user.is_staff):
            return HttpResponse("Staff only.", status=403, content_type="text/plain")
        return staff_member_required(view)(request, *args, **kwargs)

    wrapper.__name__ = view.__name__
    wrapper.__doc__ = view.__doc__
    return wrapper


@staff_only
@never_cache
def fleet_live_json(request: HttpRequest) -> JsonResponse:
    if request.method not in ("GET", "HEAD"):
        return JsonResponse({"error": "method not allowed"}, status=405)
    try:
        query = _query(request)
    except health.QueryError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse(live_data(query))


def fleet_live_page(request: HttpRequest, context: dict[str, Any]) -> HttpResponse:
    """The page (``context`` is the admin's ``each_context``): its table is
    filled and refreshed by the script from the JSON endpoint."""
    if request.method not in ("GET", "HEAD"):
        return HttpResponse(status=405)
    try:
        query = _query(request)
    except health.QueryError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    json_url = reverse("admin:procrastinate_prefork_fleetprocess_live_json")
    params = request.GET.urlencode()
    return render(
        request,
        "procrastinate_prefork/fleet_live.html",
        {
            **context,
            "title": "Fleet, live",
            "json_url": f"{json_url}?{params}" if params else json_url,
            "refresh_ms": REFRESH_SECONDS * 1000,
            "filters": {"host": query.host, "queue": query.queue},
        },
    )
