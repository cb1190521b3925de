from django.conf import settings
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
]

if not settings.DEMO_WITHOUT_PREFORK:
    urlpatterns.append(
        path("prefork/", include("procrastinate_prefork.contrib.django.urls"))
    )
