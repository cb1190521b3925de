from __future__ import annotations

import django.contrib.postgres.fields
from django.db import migrations, models

from procrastinate_prefork.fleet import schema


class Migration(migrations.Migration):
    initial = True

    # 0041 is procrastinate 3.4's last migration (retry_job_v2, which recovery
    # calls). A fixed dependency: a moving one would make Django see this
    # migration as applied before its dependency after a procrastinate upgrade.
    dependencies = [("procrastinate", "0041_post_retry_failed_job")]

    operations = [
        migrations.RunSQL(sql=schema.schema_sql(), reverse_sql=schema.drop_sql()),
        # The read-only admin's model of the table created above: migration
        # state only (unmanaged), so that makemigrations sees nothing to do.
        migrations.CreateModel(
            name="FleetProcess",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("kind", models.CharField(max_length=16)),
                ("host", models.CharField(max_length=255)),
                ("pid", models.IntegerField()),
                ("slot", models.IntegerField(blank=True, null=True)),
                (
                    "worker_id",
                    models.BigIntegerField(
                        blank=True, null=True, verbose_name="procrastinate worker id"
                    ),
                ),
                ("state", models.CharField(max_length=16)),
                (
                    "job_id",
                    models.BigIntegerField(
                        blank=True, null=True, verbose_name="current job id"
                    ),
                ),
                ("task_name", models.CharField(blank=True, max_length=255, null=True)),
                ("job_started_at", models.DateTimeField(blank=True, null=True)),
                ("jobs_done", models.BigIntegerField(default=0)),
                ("restarts", models.IntegerField(default=0)),
                (
                    "rss_bytes",
                    models.BigIntegerField(
                        blank=True, null=True, verbose_name="resident memory (bytes)"
                    ),
                ),
                ("crash_loop", models.BooleanField(default=False)),
                ("concurrency", models.IntegerField(blank=True, null=True)),
                (
                    "queues",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.CharField(max_length=255),
                        blank=True,
                        null=True,
                        size=None,
                    ),
                ),
                ("heartbeat_interval", models.FloatField(blank=True, null=True)),
                ("stalled_timeout", models.FloatField(blank=True, null=True)),
                ("started_at", models.DateTimeField()),
                ("last_heartbeat", models.DateTimeField()),
            ],
            options={
                "verbose_name": "fleet process",
                "verbose_name_plural": "fleet processes",
                "db_table": "procrastinate_prefork_processes",
                "ordering": ("host", "id"),
                "managed": False,
            },
        ),
    ]
