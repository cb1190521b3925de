"""The JSON log formatter's public dotted path, named in Django ``LOGGING``
(``{"()": "procrastinate_prefork.jsonlog.JsonFormatter"}``); it lives in
``observability.jsonlog``."""

from .observability.jsonlog import JsonFormatter

__all__ = ["JsonFormatter"]
