from __future__ import annotations

from django.db import migrations

from procrastinate_prefork import schema


class Migration(migrations.Migration):
    initial = True

    # 0041 is procrastinate 3.4's last migration (retry_job_v2, which recovery
    # calls). A fixed dependency: a moving one would make Django see this
    # migration as applied before its dependency after a procrastinate upgrade.
    dependencies = [("procrastinate", "0041_post_retry_failed_job")]

    operations = [
        migrations.RunSQL(sql=schema.schema_sql(), reverse_sql=schema.drop_sql()),
    ]
