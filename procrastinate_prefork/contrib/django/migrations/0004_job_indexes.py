from __future__ import annotations

from django.db import migrations

# The same DDL as in procrastinate_prefork/sql/schema.sql (which 0001 runs
# whole, so on a new install these indexes exist already: IF NOT EXISTS).
# Building them locks procrastinate_jobs against writes for as long as it
# takes (seconds for a million rows).
FORWARD = """
CREATE INDEX IF NOT EXISTS procrastinate_prefork_jobs_worker_id_idx
    ON procrastinate_jobs (worker_id) WHERE worker_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS procrastinate_prefork_jobs_doing_idx
    ON procrastinate_jobs (id) WHERE status = 'doing';
"""

REVERSE = """
DROP INDEX IF EXISTS procrastinate_prefork_jobs_doing_idx;
DROP INDEX IF EXISTS procrastinate_prefork_jobs_worker_id_idx;
"""


class Migration(migrations.Migration):
    dependencies = [("procrastinate_prefork", "0003_process_identity")]

    operations = [migrations.RunSQL(sql=FORWARD, reverse_sql=REVERSE)]
