from __future__ import annotations

from django.db import migrations

# The same DDL as in procrastinate_prefork/sql/schema.sql (which 0001 runs
# whole, so on a new install the table exists already: IF NOT EXISTS). Not a
# model: only the supervisors read and write its one row.
FORWARD = """
CREATE TABLE IF NOT EXISTS procrastinate_prefork_sweep (
    id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    swept_at timestamptz NOT NULL
);
"""

REVERSE = "DROP TABLE IF EXISTS procrastinate_prefork_sweep;"


class Migration(migrations.Migration):
    dependencies = [("procrastinate_prefork", "0004_job_indexes")]

    operations = [migrations.RunSQL(sql=FORWARD, reverse_sql=REVERSE)]
