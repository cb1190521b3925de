"""Django system checks (``manage.py check``, and so ``migrate`` and
``runserver``): the ``PROCRASTINATE_PREFORK`` setting, validated by the same
code as the worker's options (``config.settings_problems``), and the order of
the apps in ``INSTALLED_APPS``. The ids are documented in
docs/reference/django-checks.md."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings as django_settings
from django.core import checks

from ... import config
from .settings import HEALTH_TOKEN

PROCRASTINATE_APP = "procrastinate.contrib.django"
OUR_APP = "procrastinate_prefork.contrib.django"
REFERENCE = "every key is in docs/reference/configuration.md"

#: config.settings_problems kind -> check id
IDS = {
    "not_a_dict": "procrastinate_prefork.E001",
    "unknown": "procrastinate_prefork.E002",
    "invalid": "procrastinate_prefork.E003",
    "inconsistent": "procrastinate_prefork.E004",
    "pool_invalid": "procrastinate_prefork.E007",
    "pools_conflict": "procrastinate_prefork.E008",
}
APP_ORDER_ID = "procrastinate_prefork.E005"
HEALTH_VIEW_SETTING_ID = "procrastinate_prefork.E006"


@checks.register()
def check_prefork_setting(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    value = getattr(django_settings, "PROCRASTINATE_PREFORK", None) or {}
    return [
        checks.Error(message, hint=REFERENCE, obj="PROCRASTINATE_PREFORK", id=IDS[kind])
        for kind, _key, message in config.settings_problems(value)
    ]


@checks.register()
def check_app_order(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    names = [app_config.name for app_config in apps.get_app_configs()]
    if PROCRASTINATE_APP in names and names.index(OUR_APP) < names.index(
        PROCRASTINATE_APP
    ):
        return [
            checks.Error(
                f"'{OUR_APP}' is listed before '{PROCRASTINATE_APP}' in INSTALLED_APPS",
                hint=f"list '{PROCRASTINATE_APP}' first: the prefork migrations and "
                "commands build on procrastinate's",
                obj="INSTALLED_APPS",
                id=APP_ORDER_ID,
            )
        ]
    return []


@checks.register()
def check_health_token(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    value = getattr(django_settings, HEALTH_TOKEN, None)
    if value is None or isinstance(value, str):
        return []  # "" is no token, as unset
    return [
        checks.Error(  # the value itself is a secret: never in the message
            f"{HEALTH_TOKEN} must be a string, got {type(value).__name__}",
            hint="the health view shows its details to no token until it is one",
            obj=HEALTH_TOKEN,
            id=HEALTH_VIEW_SETTING_ID,
        )
    ]
