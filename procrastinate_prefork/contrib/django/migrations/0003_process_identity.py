from __future__ import annotations

from django.db import migrations

# The same DDL as in procrastinate_prefork/sql/schema.sql (which 0001 runs
# whole, so on a new install these columns exist already: IF NOT EXISTS). They
# stay out of the unmanaged admin model: nothing in Django reads them, and an
# array field would need django.contrib.postgres.
FORWARD = """
ALTER TABLE procrastinate_prefork_processes
    ADD COLUMN IF NOT EXISTS job_ids bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS boot_id varchar(64),
    ADD COLUMN IF NOT EXISTS pid_namespace bigint,
    ADD COLUMN IF NOT EXISTS process_start bigint;
"""

REVERSE = """
ALTER TABLE procrastinate_prefork_processes
    DROP COLUMN IF EXISTS job_ids,
    DROP COLUMN IF EXISTS boot_id,
    DROP COLUMN IF EXISTS pid_namespace,
    DROP COLUMN IF EXISTS process_start;
"""


class Migration(migrations.Migration):
    dependencies = [("procrastinate_prefork", "0002_queues_without_contrib_postgres")]

    operations = [migrations.RunSQL(sql=FORWARD, reverse_sql=REVERSE)]
