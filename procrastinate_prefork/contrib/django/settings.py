"""The ``PROCRASTINATE_PREFORK`` Django setting: a dict of option names
(see ``procrastinate_prefork.config.OPTIONS``) to values; and the health
view's token, a setting of its own (it is no option of the worker)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings as django_settings

from ...config.parsing import ConfigError

#: the setting whose value, sent as a bearer token, shows the health view's
#: details
HEALTH_TOKEN = "PROCRASTINATE_PREFORK_HEALTH_TOKEN"  # noqa: S105 - its name


def prefork_settings() -> Mapping[str, Any]:
    value = getattr(django_settings, "PROCRASTINATE_PREFORK", None) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            "setting PROCRASTINATE_PREFORK: expected a dict, "
            f"got {type(value).__name__}"
        )
    return value
