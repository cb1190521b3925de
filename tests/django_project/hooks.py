"""A ``PROCRASTINATE_ON_APP_READY`` hook that uses Django's async ORM in the
process that will fork: asgiref's thread-sensitive executor then has a live
thread, which holds a database connection of its own."""

from __future__ import annotations

import asyncio
import os
import threading
import warnings

import procrastinate


async def _touch_database() -> int:
    from asgiref.sync import sync_to_async
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection

    count = await ContentType.objects.acount()

    def backend_pid() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]

    await sync_to_async(backend_pid, thread_sensitive=True)()
    return count


def use_async_orm(app: procrastinate.App) -> None:
    with warnings.catch_warnings():
        # Django warns about database queries during app initialization.
        warnings.simplefilter("ignore", RuntimeWarning)
        asyncio.run(_touch_database())
    marker = os.environ.get("PREFORK_TEST_RESULTS")
    if marker:
        threads = [t.name for t in threading.enumerate()]
        with open(os.path.join(marker, f"parent-{os.getpid()}.threads"), "w") as f:
            f.write("\n".join(threads) + "\n")
