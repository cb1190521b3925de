from __future__ import annotations

from django.apps import AppConfig, apps
from django.core.exceptions import ImproperlyConfigured


class PreforkConfig(AppConfig):
    name = "procrastinate_prefork.contrib.django"
    label = "procrastinate_prefork"
    verbose_name = "Procrastinate prefork workers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401 (registers the system checks)

        names = [config.name for config in apps.get_app_configs()]
        if "procrastinate.contrib.django" not in names:
            raise ImproperlyConfigured(
                "procrastinate_prefork.contrib.django needs "
                "'procrastinate.contrib.django' in INSTALLED_APPS, listed before it"
            )
