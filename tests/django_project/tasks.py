"""Test-only tasks (their runs are recorded by ``middleware.record_runs``)."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from procrastinate.contrib.django import app


def _count_content_types() -> int:
    from django.contrib.contenttypes.models import ContentType

    return ContentType.objects.count()


@app.task(name="tests.orm_sync")
def orm_sync() -> int:
    """A sync task using the ORM (in one of the worker's pool threads)."""
    return _count_content_types()


@app.task(name="tests.orm_async")
async def orm_async() -> int:
    """An async task using the async ORM and a thread-sensitive sync_to_async:
    both go through asgiref's single-thread executor."""
    from django.contrib.contenttypes.models import ContentType

    count = await ContentType.objects.acount()
    again = await sync_to_async(_count_content_types, thread_sensitive=True)()
    assert count == again
    return count


@app.task(name="tests.orm_iterate")
def orm_iterate(times: int = 10) -> int:
    """``QuerySet.iterator()`` (a server-side cursor unless the database's
    DISABLE_SERVER_SIDE_CURSORS), fetched in small chunks, several times."""
    from django.contrib.contenttypes.models import ContentType

    return sum(
        1
        for _ in range(times)
        for _ in ContentType.objects.all().iterator(chunk_size=2)
    )
