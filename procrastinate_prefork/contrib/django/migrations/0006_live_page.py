from __future__ import annotations

from django.db import migrations

# The same DDL as in procrastinate_prefork/sql/schema.sql (which 0001 runs
# whole, so on a new install all of it exists already: IF NOT EXISTS). None of
# it is a model: the live page reads it with the named queries. Building the
# index locks procrastinate_jobs against writes for as long as it takes
# (seconds for a million rows; it holds the todo jobs only).
FORWARD = """
ALTER TABLE procrastinate_prefork_processes
    ADD COLUMN IF NOT EXISTS written_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS finished_per_minute jsonb;
CREATE TABLE IF NOT EXISTS procrastinate_prefork_events (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    kind varchar(16) NOT NULL,
    host varchar(255) NOT NULL,
    supervisor_id bigint,
    queues varchar(255)[],
    slot integer,
    pid integer,
    job_id bigint,
    task_name varchar(255),
    queue_name varchar(255),
    cause varchar(255),
    outcome varchar(255),
    exit_code integer,
    signal integer,
    rss_bytes bigint
);
CREATE INDEX IF NOT EXISTS procrastinate_prefork_jobs_todo_queue_id_idx
    ON procrastinate_jobs ((queue_name::text || ''), id) WHERE status = 'todo';
"""

REVERSE = """
DROP INDEX IF EXISTS procrastinate_prefork_jobs_todo_queue_id_idx;
DROP TABLE IF EXISTS procrastinate_prefork_events;
ALTER TABLE procrastinate_prefork_processes
    DROP COLUMN IF EXISTS written_at,
    DROP COLUMN IF EXISTS finished_per_minute;
"""


class Migration(migrations.Migration):
    dependencies = [("procrastinate_prefork", "0005_sweep_turn_and_queue_counts")]

    operations = [migrations.RunSQL(sql=FORWARD, reverse_sql=REVERSE)]
