-- Named queries of procrastinate-prefork, loaded by queries.py.
-- Each block starts with a "-- name --" line and a one-line comment; the
-- statement runs up to the next block. Tables: sql/schema.sql.

-- count_runnable --
-- Runnable todo jobs in the given queues (all when NULL), capped at 1000
SELECT count(*) FROM (SELECT 1 FROM procrastinate_jobs WHERE status = 'todo'
AND (scheduled_at IS NULL OR scheduled_at <= now())
AND (%(queues)s::varchar[] IS NULL OR queue_name = ANY(%(queues)s))
LIMIT 1000) AS runnable

-- missing_tables --
-- Which of the given table names do not exist in the database
SELECT array_agg(name) FROM unnest(%s::text[]) AS name
WHERE to_regclass(name) IS NULL

-- set_local_timeouts --
-- Statement and lock timeouts for the current transaction only
SELECT set_config('statement_timeout', %s, true),
set_config('lock_timeout', %s, true)

-- notify_empty --
-- An empty notification on a channel (to see LISTEN work end to end)
SELECT pg_notify(%s, '')

-- try_xact_lock --
-- Take a transaction-level advisory lock if nobody holds it; false otherwise
SELECT pg_try_advisory_xact_lock(%(key)s)

-- insert_supervisor --
-- Register a starting supervisor in the fleet table; returns its row id
INSERT INTO procrastinate_prefork_processes
(kind, host, pid, state, concurrency, queues, heartbeat_interval,
stalled_timeout, boot_id, pid_namespace, process_start)
VALUES ('supervisor', %s, %s, 'starting', %s, %s, %s, %s, %s, %s, %s)
RETURNING id

-- mark_stopped --
-- A stopping supervisor and its children: stopped, no job (worker_id stays)
UPDATE procrastinate_prefork_processes
SET state = 'stopped', job_id = NULL, task_name = NULL,
job_started_at = NULL, job_ids = '{}', last_heartbeat = now()
WHERE id = %s OR supervisor_id = %s

-- delete_silent_supervisors --
-- Delete supervisors (and by cascade their children) silent for that many seconds
DELETE FROM procrastinate_prefork_processes
WHERE kind = 'supervisor' AND last_heartbeat < now() - make_interval(secs => %s)

-- delete_workers --
-- Remove procrastinate worker rows known dead
DELETE FROM procrastinate_workers WHERE id = ANY(%s)

-- waiting_lock_holder --
-- The todo job (other than this one) that holds this queueing lock, if any
SELECT id FROM procrastinate_jobs WHERE queueing_lock = %s
AND status = 'todo' AND id <> %s ORDER BY id LIMIT 1

-- finish_job --
-- End a job with procrastinate's own function (failed, aborted...)
SELECT procrastinate_finish_job_v1(%s, %s, false)

-- count_crash --
-- One more crash of a job; returns its crash count
INSERT INTO procrastinate_prefork_job_crashes AS c
(job_id, crashes, last_cause) VALUES (%s, 1, %s)
ON CONFLICT (job_id) DO UPDATE SET crashes = c.crashes + 1,
last_cause = EXCLUDED.last_cause, updated_at = now() RETURNING crashes

-- retry_job --
-- Put a job back to todo (at a given time, or now) with procrastinate's function
SELECT procrastinate_retry_job_v2(%s, %s, NULL, NULL, NULL)

-- notify_job_inserted --
-- Wake workers of a queue and of all queues, as procrastinate does on defer
SELECT pg_notify('procrastinate_queue_v1#' || %s, %s),
pg_notify('procrastinate_any_queue_v1', %s)

-- queue_jobs --
-- Jobs waiting and running, by queue (the queue depth metric)
SELECT queue_name, status::text, count(*) FROM procrastinate_jobs
WHERE status IN ('todo', 'doing') GROUP BY queue_name, status

-- claim_sweep --
-- Take the fleet's turn to sweep if nobody took it in the last %(interval)s seconds
INSERT INTO procrastinate_prefork_sweep (id, swept_at) VALUES (1, now())
ON CONFLICT (id) DO UPDATE SET swept_at = now()
WHERE procrastinate_prefork_sweep.swept_at
    < now() - make_interval(secs => %(interval)s)
RETURNING true
