"""Read-only models of the fleet table, for the Django admin.

The table belongs to the SQL schema (``procrastinate_prefork/sql/schema.sql``,
run by migration 0001): these models are unmanaged and refuse to write.
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.db import models


class ReadOnlyError(Exception):
    pass


def _read_only(*args: Any, **kwargs: Any) -> NoReturn:
    raise ReadOnlyError(
        "The fleet table is written by the supervisors only: it is read-only in Django."
    )


class ReadOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> NoReturn:
        _read_only()

    def delete(self) -> NoReturn:
        _read_only()

    def bulk_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        _read_only()

    def bulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        _read_only()

    def create(self, **kwargs: Any) -> NoReturn:
        _read_only()


class QueueListField(models.Field):
    """The ``varchar(255)[]`` column of queue names, read as a list of str.

    Not ``django.contrib.postgres``'s ``ArrayField``: Django 6 refuses that
    field unless ``django.contrib.postgres`` is in ``INSTALLED_APPS``, which a
    read-only admin column must not force on every project. psycopg already
    turns the array into a list; the model is unmanaged, so the column type
    below is never used to create anything.
    """

    description = "List of queue names"

    def db_type(self, connection: Any) -> str:
        return "varchar(255)[]"

    def value_to_string(self, obj: Any) -> str:
        return ",".join(self.value_from_object(obj) or [])


class FleetProcess(models.Model):
    """A supervisor or one of its children (``kind``)."""

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=16)
    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    supervisor = models.ForeignKey(
        "self",
        on_delete=models.DO_NOTHING,
        null=True,
        blank=True,
        related_name="children",
        db_constraint=False,
    )
    slot = models.IntegerField(null=True, blank=True)
    worker_id = models.BigIntegerField(
        null=True, blank=True, verbose_name="procrastinate worker id"
    )
    state = models.CharField(max_length=16)
    job_id = models.BigIntegerField(
        null=True, blank=True, verbose_name="current job id"
    )
    task_name = models.CharField(max_length=255, null=True, blank=True)
    job_started_at = models.DateTimeField(null=True, blank=True)
    jobs_done = models.BigIntegerField(default=0)
    restarts = models.IntegerField(default=0)
    rss_bytes = models.BigIntegerField(
        null=True, blank=True, verbose_name="resident memory (bytes)"
    )
    crash_loop = models.BooleanField(default=False)
    concurrency = models.IntegerField(null=True, blank=True)
    queues = QueueListField(null=True, blank=True)
    heartbeat_interval = models.FloatField(null=True, blank=True)
    stalled_timeout = models.FloatField(null=True, blank=True)
    started_at = models.DateTimeField()
    last_heartbeat = models.DateTimeField()
    #: a child's pool (empty in rows written before pools: ``default``)
    pool = models.CharField(max_length=255, null=True, blank=True)

    objects = ReadOnlyQuerySet.as_manager()

    class Meta:
        managed = False
        db_table = "procrastinate_prefork_processes"
        ordering = ("host", "id")
        verbose_name = "fleet process"
        verbose_name_plural = "fleet processes"

    def __str__(self) -> str:
        if self.kind == "supervisor":
            return f"supervisor {self.pid} on {self.host}"
        pool = f" of pool {self.pool}" if self.pool else ""
        return f"child {self.slot}{pool} (pid {self.pid}) on {self.host}"

    def save(self, *args: Any, **kwargs: Any) -> NoReturn:
        _read_only()

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        _read_only()
