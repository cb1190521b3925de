from __future__ import annotations

from django.db import migrations

# The same DDL as in procrastinate_prefork/sql/schema.sql (which 0001 runs
# whole, so on a new install all of it exists already: IF NOT EXISTS). The
# sweep table is not a model: only the supervisors read and write its one row.
# Building the index locks procrastinate_jobs against writes for as long as
# it takes (seconds for a million rows; it holds the todo jobs only).
FORWARD = """
CREATE TABLE IF NOT EXISTS procrastinate_prefork_sweep (
    id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    swept_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS procrastinate_prefork_jobs_todo_queue_idx
    ON procrastinate_jobs (queue_name) WHERE status = 'todo';
CREATE STATISTICS IF NOT EXISTS procrastinate_prefork_jobs_queue_status
    (mcv) ON queue_name, status FROM procrastinate_jobs;
"""

REVERSE = """
DROP STATISTICS IF EXISTS procrastinate_prefork_jobs_queue_status;
DROP INDEX IF EXISTS procrastinate_prefork_jobs_todo_queue_idx;
DROP TABLE IF EXISTS procrastinate_prefork_sweep;
"""


class Migration(migrations.Migration):
    dependencies = [("procrastinate_prefork", "0004_job_indexes")]

    operations = [migrations.RunSQL(sql=FORWARD, reverse_sql=REVERSE)]
