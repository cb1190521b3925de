from __future__ import annotations

from django.db import migrations

# The same DDL as in procrastinate_prefork/sql/schema.sql (which 0001 runs
# whole, so on a new install it exists already: IF NOT EXISTS).
FORWARD = """
CREATE INDEX IF NOT EXISTS procrastinate_prefork_processes_live_idx
    ON procrastinate_prefork_processes (host, id)
    WHERE kind = 'supervisor' AND state <> 'stopped';
ALTER TABLE procrastinate_prefork_sweep
    ADD COLUMN IF NOT EXISTS queue_jobs jsonb,
    ADD COLUMN IF NOT EXISTS queue_jobs_at timestamptz,
    ADD COLUMN IF NOT EXISTS queue_jobs_by bigint;
"""

REVERSE = """
ALTER TABLE procrastinate_prefork_sweep
    DROP COLUMN IF EXISTS queue_jobs,
    DROP COLUMN IF EXISTS queue_jobs_at,
    DROP COLUMN IF EXISTS queue_jobs_by;
DROP INDEX IF EXISTS procrastinate_prefork_processes_live_idx;
"""


class Migration(migrations.Migration):
    dependencies = [("procrastinate_prefork", "0007_pools")]

    operations = [migrations.RunSQL(sql=FORWARD, reverse_sql=REVERSE)]
