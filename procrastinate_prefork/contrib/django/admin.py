"""A read-only admin page of the fleet table."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.utils import timezone

from ...config.pools import DEFAULT_POOL
from . import live
from .models import FleetProcess


@admin.register(FleetProcess)
class FleetProcessAdmin(admin.ModelAdmin):
    # Few and narrow columns: the list fits 1280 px beside the admin's
    # navigation and the filters (the live page has the rest).
    list_display = (
        "process",
        "host",
        "state",
        "job",
        "done",
        "memory",
        "heartbeat_age",
    )
    list_filter = ("kind", "state", "host", "pool", "crash_loop")
    search_fields = ("host", "=pid", "task_name", "=job_id")
    ordering = ("host", "id")
    list_per_page = 200
    # Adds the "Watch live" button (templates/procrastinate_prefork/).
    change_list_template = "procrastinate_prefork/fleet_change_list.html"

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name

        @live.staff_only
        def page(request: HttpRequest) -> HttpResponse:
            return live.fleet_live_page(request, self.admin_site.each_context(request))

        return [
            path("live/", page, name="{}_{}_live".format(*info)),
            path(
                "live.json", live.fleet_live_json, name="{}_{}_live_json".format(*info)
            ),
            *super().get_urls(),
        ]

    @admin.display(description="process", ordering="id")
    def process(self, obj: FleetProcess) -> str:
        if obj.kind == "supervisor":
            return f"supervisor {obj.pid}" + (" (crash loop)" if obj.crash_loop else "")
        # a pool other than a fleet's only one is named (issue 24)
        pool = f"{obj.pool}/" if obj.pool and obj.pool != DEFAULT_POOL else ""
        return f"child {pool}{obj.slot} (pid {obj.pid})"

    @admin.display(description="job", ordering="job_id")
    def job(self, obj: FleetProcess) -> str:
        if obj.job_id is None:
            return "-"
        return f"#{obj.job_id} {obj.task_name or ''}".rstrip()

    @admin.display(description="jobs done", ordering="jobs_done")
    def done(self, obj: FleetProcess) -> str:
        # a supervisor runs no job (as in the status table and the live page)
        return "-" if obj.kind == "supervisor" else str(obj.jobs_done)

    @admin.display(description="memory")
    def memory(self, obj: FleetProcess) -> str:
        return f"{obj.rss_bytes / (1 << 20):.1f} MiB" if obj.rss_bytes else "-"

    @admin.display(description="heartbeat", ordering="last_heartbeat")
    def heartbeat_age(self, obj: FleetProcess) -> str:
        return f"{(timezone.now() - obj.last_heartbeat).total_seconds():.1f} s"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
