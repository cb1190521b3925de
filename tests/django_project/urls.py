from django.contrib import admin
from django.urls import include, path

# The fleet health view and the read-only admin (tests/integration/test_health.py).
urlpatterns: list = [
    path("admin/", admin.site.urls),
    path("prefork/", include("procrastinate_prefork.contrib.django.urls")),
]
