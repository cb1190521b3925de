"""``path("<prefix>/", include("procrastinate_prefork.contrib.django.urls"))``
serves the fleet health JSON at the include's root."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "procrastinate_prefork"

urlpatterns = [
    path("", views.fleet_health, name="fleet-health"),
]
