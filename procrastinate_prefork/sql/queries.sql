-- Named queries of procrastinate-prefork, loaded by queries.py.
-- Each block starts with a "-- name --" line and a one-line comment; the
-- statement runs up to the next block (comments after the first line are part
-- of the statement: no percent sign in them). Tables: sql/schema.sql.
--
-- Rules written out in more than one block; change every copy together:
-- * when a supervisor and its children count as gone: the CTE "sup", the same
--   text in mark_gone_supervisors, stalled_jobs and prune_dead_workers (and
--   the rest of the WITH list, up to dead_worker, is the same in the last two;
--   tests/unit/test_queries.py checks both);
-- * a child row runs a job: "job.id = ANY(c.job_ids)" in heartbeat and
--   stalled_jobs (twice);
-- * silent, i.e. nothing heard for a timeout that the sweeper has been
--   healthy for: "since < now() - make_interval(secs => timeout) AND
--   timeout <= healthy_for" in "sup", dead_worker and stalled_jobs;
-- * the job columns the recovery reads: worker_jobs and stalled_jobs;
-- * the columns of fleet_rows and fleet_rows_selected (snapshot.from_rows
--   reads them);
-- * a supervisor the status views select (host, queues, not stopped): "sel"
--   in fleet_rows_selected and fleet_summary; when it is stale (health.py's
--   is_fresh): the ORDER BY of "sel" in fleet_rows_selected and "judged" in
--   fleet_summary; when it and a child are fresh (is_fresh and counts):
--   fleet_summary (tests/integration/test_status_sql.py compares both
--   statements with the rules in Python);
-- * a job is a run's own while it is 'doing' in the attempt it fetched (a
--   recovery adds one) under its worker, or under none (its worker row was
--   deleted under it): finish_owned_job, retry_owned_job, job_still_owned,
--   end_owned_job_and_fetch (whose fetched columns are those of
--   procrastinate's own fetch_job query).

-- count_runnable --
-- Runnable todo jobs in every queue, capped at 1000
SELECT count(*) FROM (SELECT 1 FROM procrastinate_jobs WHERE status = 'todo'
AND (scheduled_at IS NULL OR scheduled_at <= now())
LIMIT 1000) AS runnable

-- count_runnable_in_queues --
-- Runnable todo jobs in the given queues, capped at 1000
-- (a statement of its own, not "queues IS NULL OR": with that, PostgreSQL
-- cannot use the index of todo jobs by queue, and walks every todo job of
-- the other queues)
SELECT count(*) FROM (SELECT 1 FROM procrastinate_jobs WHERE status = 'todo'
AND (scheduled_at IS NULL OR scheduled_at <= now())
AND queue_name = ANY(%(queues)s)
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
job_started_at = NULL, job_ids = '{}', last_heartbeat = now(), written_at = now()
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
-- The queue depth metric's counts: counted for the fleet if due, else as published
-- Jobs waiting and running by queue, counted by one supervisor for the fleet
-- (the first whose turn comes once the published counts are older than the
-- given interval, in seconds) and published in the sweep table's row; the
-- others get the published counts and their age. The count is the UPDATE's
-- init plan, run only when the row is claimed. The row is seeded at the
-- first call (the next one claims it).
WITH seeded AS (
    INSERT INTO procrastinate_prefork_sweep (id, swept_at)
    SELECT 1, '-infinity' WHERE NOT EXISTS (SELECT FROM procrastinate_prefork_sweep)
    ON CONFLICT (id) DO NOTHING
), counted AS (
    UPDATE procrastinate_prefork_sweep
    SET queue_jobs = (
            SELECT COALESCE(jsonb_agg(jsonb_build_array(queue_name, status, n)),
                            '[]')
            FROM (SELECT queue_name, status::text AS status, count(*) AS n
                  FROM procrastinate_jobs WHERE status IN ('todo', 'doing')
                  GROUP BY queue_name, status) AS by_queue
        ),
        queue_jobs_at = now(), queue_jobs_by = %(supervisor_id)s
    WHERE id = 1 AND (queue_jobs_at IS NULL
                      OR queue_jobs_at < now() - make_interval(secs => %(interval)s))
    RETURNING queue_jobs
)
SELECT queue_jobs, 0.0::float8 AS age, true AS counted FROM counted
UNION ALL
SELECT queue_jobs, EXTRACT(EPOCH FROM now() - queue_jobs_at)::float8, false
FROM procrastinate_prefork_sweep
WHERE queue_jobs IS NOT NULL AND NOT EXISTS (SELECT FROM counted)

-- heartbeat --
-- Write a supervisor's row, its children's rows and their workers' heartbeats
WITH workers AS (
    -- re-inserted if deleted under a live child (a stock worker's start-up
    -- prune): its next fetch would fail on the foreign key
    INSERT INTO procrastinate_workers AS w (id, last_heartbeat)
    OVERRIDING SYSTEM VALUE
    SELECT id, now() FROM unnest(%(worker_ids)s::bigint[]) AS id
    ON CONFLICT (id) DO UPDATE SET last_heartbeat = now()
    RETURNING w.id
), supervisor AS (
    UPDATE procrastinate_prefork_processes
    SET last_heartbeat = now(), state = %(state)s, crash_loop = %(crash_loop)s,
        concurrency = %(concurrency)s, rss_bytes = %(rss)s, written_at = now(),
        finished_per_minute = %(finished_per_minute)s::jsonb,
        pools = %(pools)s::jsonb
    WHERE id = %(supervisor_id)s
    RETURNING id
), children AS (
    SELECT * FROM jsonb_to_recordset(%(children)s::jsonb) AS c(
        slot integer, pid integer, worker_id bigint, state text, job_id bigint,
        task_name text, jobs_done bigint, restarts integer, rss_bytes bigint,
        started_at timestamptz, heartbeat_age float8, job_age float8,
        job_ids bigint[], pool text)
), upserted AS (
    INSERT INTO procrastinate_prefork_processes AS p
        (kind, host, pid, supervisor_id, slot, worker_id, state, job_id, task_name,
         job_started_at, jobs_done, restarts, rss_bytes, started_at, last_heartbeat,
         job_ids, pool)
    SELECT 'child', %(host)s, c.pid, %(supervisor_id)s, c.slot, c.worker_id, c.state,
           c.job_id, c.task_name, now() - make_interval(secs => c.job_age),
           c.jobs_done, c.restarts, c.rss_bytes, c.started_at,
           now() - make_interval(secs => c.heartbeat_age),
           COALESCE(c.job_ids, '{}'), c.pool
    FROM children AS c WHERE EXISTS (SELECT 1 FROM supervisor)
    ON CONFLICT (supervisor_id, slot) WHERE kind = 'child' DO UPDATE SET
        pid = EXCLUDED.pid, worker_id = EXCLUDED.worker_id, state = EXCLUDED.state,
        job_id = EXCLUDED.job_id, task_name = EXCLUDED.task_name,
        job_started_at = EXCLUDED.job_started_at, job_ids = EXCLUDED.job_ids,
        jobs_done = EXCLUDED.jobs_done, restarts = EXCLUDED.restarts,
        rss_bytes = EXCLUDED.rss_bytes, started_at = EXCLUDED.started_at,
        last_heartbeat = EXCLUDED.last_heartbeat, written_at = now(),
        pool = EXCLUDED.pool
    RETURNING slot
), reattached AS (
    -- a job whose worker row was deleted under its live child gets its
    -- worker back: the child's death is then recovered like any other
    UPDATE procrastinate_jobs AS job SET worker_id = c.worker_id
    FROM children AS c
    WHERE job.id = ANY(c.job_ids) AND c.worker_id = ANY(%(worker_ids)s)
      AND job.status = 'doing' AND job.worker_id IS NULL
      AND EXISTS (SELECT 1 FROM workers WHERE workers.id = c.worker_id)
    RETURNING job.id
)
UPDATE procrastinate_prefork_processes
SET state = 'stopped', job_id = NULL, task_name = NULL, job_started_at = NULL,
    worker_id = NULL, job_ids = '{}', written_at = now()
WHERE supervisor_id = %(supervisor_id)s AND kind = 'child'
  AND state <> 'stopped' AND NOT (slot = ANY(%(live_slots)s))

-- record_child_worker --
-- A child's own row gets its worker id as soon as the worker registers, before its first fetch
-- The supervisor writes it too, at its next heartbeat; if the process tree
-- dies before that (a SIGKILL of the supervisor), its successor and the
-- sweep find the worker's jobs by this row. The identity columns, as the
-- heartbeat's upsert writes them, and what a new process of the slot starts
-- with: no job done, one restart more than its predecessor's row says (the
-- supervisor counts every death of a slot's child; its next heartbeat writes
-- its own count and the rest), so that no view shows the new process with
-- its predecessor's figures.
INSERT INTO procrastinate_prefork_processes AS p
    (kind, host, pid, supervisor_id, slot, worker_id, state)
VALUES ('child', %(host)s, %(pid)s, %(supervisor_id)s, %(slot)s, %(worker_id)s,
        'starting')
ON CONFLICT (supervisor_id, slot) WHERE kind = 'child' DO UPDATE SET
    pid = EXCLUDED.pid, worker_id = EXCLUDED.worker_id, state = EXCLUDED.state,
    job_id = NULL, task_name = NULL, job_started_at = NULL, job_ids = '{}',
    restarts = p.restarts + (p.pid <> EXCLUDED.pid)::int,
    jobs_done = CASE WHEN p.pid <> EXCLUDED.pid THEN 0 ELSE p.jobs_done END,
    rss_bytes = CASE WHEN p.pid <> EXCLUDED.pid THEN NULL ELSE p.rss_bytes END,
    started_at = CASE WHEN p.pid <> EXCLUDED.pid THEN now() ELSE p.started_at END,
    written_at = now()

-- write_jobs --
-- Write the running jobs of a supervisor's children between heartbeats
-- Only the rows that changed; no heartbeat time (last_heartbeat proves that a
-- process lives: the sweep and the health rules judge by it), no worker id.
WITH children AS (
    SELECT * FROM jsonb_to_recordset(%(children)s::jsonb) AS c(
        slot integer, pid integer, state text, job_id bigint, task_name text,
        jobs_done bigint, job_age float8, job_ids bigint[])
), changed AS (
    UPDATE procrastinate_prefork_processes AS p
    SET pid = c.pid, state = c.state, job_id = c.job_id, task_name = c.task_name,
        job_started_at = now() - make_interval(secs => c.job_age),
        job_ids = COALESCE(c.job_ids, '{}'), jobs_done = c.jobs_done,
        written_at = now()
    FROM children AS c
    WHERE p.supervisor_id = %(supervisor_id)s AND p.kind = 'child'
      AND p.slot = c.slot
      AND (p.pid, p.state, p.job_ids, p.jobs_done)
          IS DISTINCT FROM (c.pid, c.state, COALESCE(c.job_ids, '{}'), c.jobs_done)
    RETURNING p.id
)
UPDATE procrastinate_prefork_processes
SET state = 'stopped', job_id = NULL, task_name = NULL, job_started_at = NULL,
    job_ids = '{}', written_at = now()
WHERE supervisor_id = %(supervisor_id)s AND kind = 'child'
  AND state <> 'stopped' AND NOT (slot = ANY(%(live_slots)s))

-- mark_gone_supervisors --
-- Mark the supervisors judged gone stopped, with their children, without jobs
-- A supervisor counts as gone after its timeout: its declared stalled timeout,
-- or its declared heartbeat interval plus the judge's slack if that is longer
-- (own_timeout and own_interval stand in for a row that declares none); and
-- only once the judge has been healthy that long.
WITH sup AS (
    SELECT s.id, t.timeout,
           s.state = 'stopped'
           OR (s.last_heartbeat < now() - make_interval(secs => t.timeout)
               AND t.timeout <= %(healthy_for)s) AS dead
    FROM procrastinate_prefork_processes AS s,
    LATERAL (SELECT GREATEST(COALESCE(s.stalled_timeout, %(own_timeout)s),
             COALESCE(s.heartbeat_interval, %(own_interval)s) + %(slack)s)
             AS timeout) AS t
    WHERE s.kind = 'supervisor'
)
UPDATE procrastinate_prefork_processes AS p
SET state = 'stopped', job_id = NULL, task_name = NULL, job_started_at = NULL,
    job_ids = '{}'
FROM sup
WHERE sup.id = COALESCE(p.supervisor_id, p.id) AND p.state <> 'stopped'
  AND sup.dead

-- host_supervisors --
-- Supervisors of a host name but ours, not stopped, silent or not, and their workers
SELECT s.id, s.pid, s.boot_id, s.pid_namespace, s.process_start,
       now() - s.last_heartbeat
         > make_interval(secs => COALESCE(s.stalled_timeout, %(stalled_timeout)s))
         AS silent,
       COALESCE(array_agg(c.worker_id) FILTER (WHERE c.worker_id IS NOT NULL),
                '{}') AS worker_ids
FROM procrastinate_prefork_processes AS s
LEFT JOIN procrastinate_prefork_processes AS c ON c.supervisor_id = s.id
WHERE s.kind = 'supervisor' AND s.host = %(host)s AND s.id <> %(own_id)s
  AND s.state <> 'stopped'
GROUP BY s.id

-- fleet_rows --
-- The fleet table's rows as the status views show them, live ones only if asked
-- Ages are in seconds by the database's clock (so the clocks of the hosts do
-- not matter); a child's stalled_timeout is its supervisor's. live_only leaves
-- out processes that stopped cleanly or were marked so by a prune. Runs on
-- psycopg and on Django's cursor alike.
SELECT p.id, p.kind, p.host, p.pid, p.supervisor_id, p.slot, p.worker_id, p.state,
       p.job_id, p.task_name, p.jobs_done, p.restarts, p.rss_bytes, p.crash_loop,
       p.concurrency, p.queues, p.heartbeat_interval,
       COALESCE(p.stalled_timeout, s.stalled_timeout) AS stalled_timeout,
       p.started_at, p.last_heartbeat,
       EXTRACT(EPOCH FROM now() - p.last_heartbeat)::float8 AS heartbeat_age,
       EXTRACT(EPOCH FROM now() - p.started_at)::float8 AS uptime,
       EXTRACT(EPOCH FROM now() - p.job_started_at)::float8 AS job_age,
       EXTRACT(EPOCH FROM now() - p.written_at)::float8 AS as_of_age,
       p.finished_per_minute, p.pool, p.pools
FROM procrastinate_prefork_processes AS p
LEFT JOIN procrastinate_prefork_processes AS s ON s.id = p.supervisor_id
WHERE NOT %(live_only)s
   OR (p.state <> 'stopped' AND COALESCE(s.state, '') <> 'stopped')
ORDER BY p.host, COALESCE(p.supervisor_id, p.id), p.kind DESC, p.slot, p.id

-- fleet_rows_selected --
-- The live rows of fleet_rows of the listed supervisors (host, queue, a limit)
-- The same columns, in the same order, as fleet_rows with live_only (a
-- statement of its own: inside fleet_rows, the condition "neither given, or
-- selected" keeps PostgreSQL from planning the selection as a join, and it
-- reads every row). Listed: up to the limit (NULL: all), those with a problem
-- first (in a crash loop, or stale as fleet_summary judges it:
-- health.has_problem), then by host and pid. The live supervisors selected
-- are read through the index of live supervisors, the listed ones and their
-- children by their ids (the primary key and the slot index): never the
-- other rows, stopped ones included, which pile up until a prune. Ids in an
-- array, not a join: joined, 50 supervisors looked many enough to PostgreSQL
-- to read every child row and hash them.
WITH sel AS (
    SELECT id, stalled_timeout FROM procrastinate_prefork_processes
    WHERE kind = 'supervisor' AND state <> 'stopped'
      AND (%(host)s::text IS NULL OR host = %(host)s::text)
      AND (%(queue)s::text IS NULL OR COALESCE(cardinality(queues), 0) = 0
           OR %(queue)s::text = ANY(queues))
    ORDER BY (crash_loop
              OR EXTRACT(EPOCH FROM now() - last_heartbeat)::float8
                 > COALESCE(NULLIF(stalled_timeout, 0),
                            %(default_stale_after)s::float8)) DESC,
             host, pid, id
    LIMIT %(limit)s
), p AS (
    SELECT * FROM procrastinate_prefork_processes
    WHERE id = ANY(ARRAY(SELECT id FROM sel))
    UNION ALL
    SELECT * FROM procrastinate_prefork_processes
    WHERE supervisor_id = ANY(ARRAY(SELECT id FROM sel))
      AND kind = 'child' AND state <> 'stopped'
)
SELECT p.id, p.kind, p.host, p.pid, p.supervisor_id, p.slot, p.worker_id, p.state,
       p.job_id, p.task_name, p.jobs_done, p.restarts, p.rss_bytes, p.crash_loop,
       p.concurrency, p.queues, p.heartbeat_interval,
       COALESCE(p.stalled_timeout, s.stalled_timeout) AS stalled_timeout,
       p.started_at, p.last_heartbeat,
       EXTRACT(EPOCH FROM now() - p.last_heartbeat)::float8 AS heartbeat_age,
       EXTRACT(EPOCH FROM now() - p.started_at)::float8 AS uptime,
       EXTRACT(EPOCH FROM now() - p.job_started_at)::float8 AS job_age,
       EXTRACT(EPOCH FROM now() - p.written_at)::float8 AS as_of_age,
       p.finished_per_minute, p.pool, p.pools
FROM p
JOIN sel AS s ON s.id = COALESCE(p.supervisor_id, p.id)
ORDER BY p.host, COALESCE(p.supervisor_id, p.id), p.kind DESC, p.slot, p.id

-- fleet_summary --
-- The fleet's verdict facts in one row, for probes: no process listed
-- Over the supervisors the status views would list (not stopped, selected by
-- host and queue): how many are fresh (heard from within their
-- --stalled-timeout, default_stale_after when they declared none), how many
-- of their children are fresh and in a working state, and the fresh
-- supervisors in a crash loop and the stale ones, in the listing's order;
-- and how many they are, fresh or stale.
WITH sel AS (
    SELECT id, host, pid, crash_loop,
           EXTRACT(EPOCH FROM now() - last_heartbeat)::float8 AS heartbeat_age,
           COALESCE(NULLIF(stalled_timeout, 0), %(default_stale_after)s::float8)
               AS stale_after
    FROM procrastinate_prefork_processes
    WHERE kind = 'supervisor' AND state <> 'stopped'
      AND (%(host)s::text IS NULL OR host = %(host)s::text)
      AND (%(queue)s::text IS NULL OR COALESCE(cardinality(queues), 0) = 0
           OR %(queue)s::text = ANY(queues))
), judged AS (
    SELECT sel.*, heartbeat_age <= stale_after AS fresh FROM sel
)
SELECT (SELECT count(*) FROM judged) AS supervisors,
       (SELECT count(*) FROM judged WHERE fresh) AS fresh_supervisors,
       (SELECT count(*) FROM judged AS j
        JOIN procrastinate_prefork_processes AS c
          ON c.supervisor_id = j.id AND c.kind = 'child'
        WHERE j.fresh AND c.state = ANY(%(working_states)s::text[])
          AND EXTRACT(EPOCH FROM now() - c.last_heartbeat)::float8 <= j.stale_after
       ) AS fresh_children,
       (SELECT COALESCE(jsonb_agg(jsonb_build_array(pid, host) ORDER BY host, id), '[]')
        FROM judged WHERE fresh AND crash_loop) AS crash_loops,
       (SELECT COALESCE(jsonb_agg(jsonb_build_array(pid, host, heartbeat_age)
                                  ORDER BY host, id), '[]')
        FROM judged WHERE NOT fresh) AS stale

-- worker_jobs --
-- Lock the doing jobs of workers known dead, with the args of the timed-out ones
-- Without the arguments of the others, which may weigh megabytes each: the
-- supervisor reads them only for a job stopped by its time limit, whose task's
-- retry strategy gets the job.
SELECT id, task_name, queue_name, abort_requested, attempts, lock, queueing_lock,
       CASE WHEN id = ANY(%(timed_out_job_ids)s::bigint[]) THEN args END AS args,
       scheduled_at, priority, status, worker_id
FROM procrastinate_jobs
WHERE worker_id = ANY(%(worker_ids)s) AND status = 'doing'
ORDER BY id FOR UPDATE SKIP LOCKED

-- stalled_jobs --
-- Lock up to a limit of doing jobs whose process is judged gone (no args)
-- Computed once per statement (hash joins, not a fleet-table scan per job):
-- each supervisor's timeout and verdict (as in mark_gone_supervisors), the
-- child rows with theirs, and the worker rows judged dead (by their child's
-- supervisor, or as stock workers by stock_timeout).
WITH sup AS (
    SELECT s.id, t.timeout,
           s.state = 'stopped'
           OR (s.last_heartbeat < now() - make_interval(secs => t.timeout)
               AND t.timeout <= %(healthy_for)s) AS dead
    FROM procrastinate_prefork_processes AS s,
    LATERAL (SELECT GREATEST(COALESCE(s.stalled_timeout, %(own_timeout)s),
             COALESCE(s.heartbeat_interval, %(own_interval)s) + %(slack)s)
             AS timeout) AS t
    WHERE s.kind = 'supervisor'
), claim AS (
    SELECT c.worker_id, c.job_ids, sup.timeout, sup.dead
    FROM procrastinate_prefork_processes AS c JOIN sup ON sup.id = c.supervisor_id
    WHERE c.kind = 'child'
), worker_timeout AS (
    SELECT worker_id, max(timeout) AS timeout FROM claim
    WHERE worker_id IS NOT NULL GROUP BY worker_id
), dead_worker AS (
    SELECT w.id FROM procrastinate_workers AS w
    LEFT JOIN worker_timeout AS t ON t.worker_id = w.id
    WHERE w.last_heartbeat
          < now() - make_interval(secs => COALESCE(t.timeout, %(stock_timeout)s))
      AND COALESCE(t.timeout, %(stock_timeout)s) <= %(healthy_for)s
)
SELECT id, task_name, queue_name, abort_requested, attempts, lock, queueing_lock,
       NULL::jsonb AS args, scheduled_at, priority, status, worker_id
FROM procrastinate_jobs AS job
WHERE job.status = 'doing'
  -- A job a live supervisor's child runs is that supervisor's to recover,
  -- even if its worker row is stale (a wedged child) or gone (a stock
  -- worker's prune); such a claim counts only for a job under the child's
  -- worker or under none (a job fetched again by another worker is that
  -- one's).
  AND NOT EXISTS (
      SELECT 1 FROM claim AS c WHERE job.id = ANY(c.job_ids) AND NOT c.dead
      AND (job.worker_id IS NULL OR job.worker_id = c.worker_id))
  -- Otherwise its worker row decides; without one (deleted under it): a child
  -- row of a dead supervisor, or, with no claim at all, how long it has been
  -- running.
  AND CASE WHEN job.worker_id IS NOT NULL
      THEN job.worker_id IN (SELECT id FROM dead_worker)
      ELSE EXISTS (SELECT 1 FROM claim AS c WHERE job.id = ANY(c.job_ids))
        OR (COALESCE((SELECT max(e.at) FROM procrastinate_events AS e
                      WHERE e.job_id = job.id AND e.type = 'started'),
                     '-infinity')
              < now() - make_interval(secs => %(stock_timeout)s)
            AND %(stock_timeout)s <= %(healthy_for)s)
      END
ORDER BY job.id LIMIT %(limit)s FOR UPDATE OF job SKIP LOCKED

-- prune_dead_workers --
-- Delete the worker rows judged dead (as in stalled_jobs) with no job left doing
-- A job skipped now keeps its worker id, and so its judge, for the next sweep.
WITH sup AS (
    SELECT s.id, t.timeout,
           s.state = 'stopped'
           OR (s.last_heartbeat < now() - make_interval(secs => t.timeout)
               AND t.timeout <= %(healthy_for)s) AS dead
    FROM procrastinate_prefork_processes AS s,
    LATERAL (SELECT GREATEST(COALESCE(s.stalled_timeout, %(own_timeout)s),
             COALESCE(s.heartbeat_interval, %(own_interval)s) + %(slack)s)
             AS timeout) AS t
    WHERE s.kind = 'supervisor'
), claim AS (
    SELECT c.worker_id, c.job_ids, sup.timeout, sup.dead
    FROM procrastinate_prefork_processes AS c JOIN sup ON sup.id = c.supervisor_id
    WHERE c.kind = 'child'
), worker_timeout AS (
    SELECT worker_id, max(timeout) AS timeout FROM claim
    WHERE worker_id IS NOT NULL GROUP BY worker_id
), dead_worker AS (
    SELECT w.id FROM procrastinate_workers AS w
    LEFT JOIN worker_timeout AS t ON t.worker_id = w.id
    WHERE w.last_heartbeat
          < now() - make_interval(secs => COALESCE(t.timeout, %(stock_timeout)s))
      AND COALESCE(t.timeout, %(stock_timeout)s) <= %(healthy_for)s
)
DELETE FROM procrastinate_workers AS w
WHERE w.id IN (SELECT id FROM dead_worker)
  AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs AS j
                  WHERE j.worker_id = w.id AND j.status = 'doing')

-- claim_sweep --
-- Take the fleet's turn to sweep if nobody took it within the given interval (seconds)
INSERT INTO procrastinate_prefork_sweep (id, swept_at) VALUES (1, now())
ON CONFLICT (id) DO UPDATE SET swept_at = now()
WHERE procrastinate_prefork_sweep.swept_at
    < now() - make_interval(secs => %(interval)s)
RETURNING true

-- finish_owned_job --
-- End a job with procrastinate's function, only if it is still this run's
WITH owned AS MATERIALIZED (
    SELECT id FROM procrastinate_jobs
    WHERE id = %(job_id)s AND status = 'doing' AND attempts = %(attempts)s
      AND (worker_id = %(worker_id)s OR worker_id IS NULL)
    FOR UPDATE
)
SELECT procrastinate_finish_job_v1(id, %(status)s, %(delete_job)s)::text
FROM owned

-- retry_owned_job --
-- Retry a job with procrastinate's function, only if it is still this run's
WITH owned AS MATERIALIZED (
    SELECT id FROM procrastinate_jobs
    WHERE id = %(job_id)s AND status = 'doing' AND attempts = %(attempts)s
      AND (worker_id = %(worker_id)s OR worker_id IS NULL)
    FOR UPDATE
)
SELECT procrastinate_retry_job_v2(id, %(retry_at)s, %(new_priority)s,
    %(new_queue_name)s, %(new_lock)s)::text
FROM owned

-- end_owned_job_and_fetch --
-- finish_owned_job or retry_owned_job, then procrastinate's fetch of the next job
-- "retry" picks the end (the other one's parameters are NULL). "recorded" is
-- 1 if the outcome was written, 0 if the job is no longer this run's; then
-- the fetched job's columns (all NULL when none is waiting). The fetch takes
-- its worker id from "ended": it runs once the end is recorded, so it sees the
-- ended job's lock released (and can fetch a job retried for now). One
-- statement, one transaction: if the fetch fails, nothing is written (the
-- caller then records the end alone).
WITH owned AS MATERIALIZED (
    SELECT id FROM procrastinate_jobs
    WHERE id = %(job_id)s AND status = 'doing' AND attempts = %(attempts)s
      AND (worker_id = %(worker_id)s OR worker_id IS NULL)
    FOR UPDATE
), ended AS MATERIALIZED (
    SELECT count(CASE WHEN %(retry)s
                 THEN procrastinate_retry_job_v2(id, %(retry_at)s,
                      %(new_priority)s, %(new_queue_name)s, %(new_lock)s)::text
                 ELSE procrastinate_finish_job_v1(id, %(status)s,
                      %(delete_job)s)::text END) AS recorded,
           %(fetcher_id)s::bigint AS fetcher_id
    FROM owned
)
SELECT ended.recorded, next.id, next.status, next.task_name, next.priority,
       next.lock, next.queueing_lock, next.args, next.scheduled_at,
       next.queue_name, next.attempts, next.worker_id
FROM ended, LATERAL procrastinate_fetch_job_v2(%(queues)s::varchar[],
                                               ended.fetcher_id) AS next

-- release_fetched_job --
-- Give back a job fetched but never started: todo again, no attempt spent, workers woken
-- The exact undo of procrastinate's fetch (status and worker); its event
-- trigger records it as deferred_for_retry.
WITH released AS (
    UPDATE procrastinate_jobs SET status = 'todo', worker_id = NULL
    WHERE id = %(job_id)s AND status = 'doing' AND worker_id = %(worker_id)s
      AND attempts = %(attempts)s
    RETURNING queue_name
)
SELECT pg_notify('procrastinate_queue_v1#' || queue_name, %(payload)s),
       pg_notify('procrastinate_any_queue_v1', %(payload)s)
FROM released

-- release_lost_fetches --
-- Give back the jobs doing under a live worker that it does not hold: fetched, the reply lost
-- Run after a fetch (or an end with the next fetch) whose connection broke:
-- it may have committed, its job never reached the worker. As
-- release_fetched_job: the exact undo of procrastinate's fetch (no attempt
-- spent; the event trigger records deferred_for_retry), workers woken. A job
-- whose queueing lock a waiting job holds cannot go back to todo: failed, as
-- a recovery does (the waiting job does the work). "failed" says which.
WITH lost AS MATERIALIZED (
    SELECT j.id, j.queueing_lock IS NOT NULL AND EXISTS (
               SELECT 1 FROM procrastinate_jobs AS w
               WHERE w.queueing_lock = j.queueing_lock AND w.status = 'todo')
           AS conflict
    FROM procrastinate_jobs AS j
    WHERE j.worker_id = %(worker_id)s AND j.status = 'doing'
      AND NOT (j.id = ANY(%(held)s::bigint[]))
    FOR UPDATE OF j
), released AS (
    UPDATE procrastinate_jobs AS j SET status = 'todo', worker_id = NULL
    FROM lost WHERE j.id = lost.id AND NOT lost.conflict
    RETURNING j.id, j.queue_name,
              json_build_object('type', 'job_inserted', 'job_id', j.id)::text
              AS payload
), failed AS (
    SELECT id, procrastinate_finish_job_v1(id, 'failed', false)::text AS done
    FROM lost WHERE conflict
)
SELECT r.id, false AS failed,
       pg_notify('procrastinate_queue_v1#' || r.queue_name, r.payload)::text
         AS woken_queue,
       pg_notify('procrastinate_any_queue_v1', r.payload)::text AS woken_all
FROM released AS r
UNION ALL
SELECT f.id, true, f.done, f.done FROM failed AS f

-- job_still_owned --
-- 1 if the job is still this run's, else 0
SELECT count(*) AS n FROM procrastinate_jobs
WHERE id = %(job_id)s AND status = 'doing' AND attempts = %(attempts)s
  AND (worker_id = %(worker_id)s OR worker_id IS NULL)

-- insert_events --
-- Record child deaths, time limits and job recoveries for the live page
INSERT INTO procrastinate_prefork_events
(kind, host, supervisor_id, queues, slot, pid, job_id, task_name, queue_name,
 cause, outcome, exit_code, signal, rss_bytes)
SELECT e.kind, %(host)s, %(supervisor_id)s, %(queues)s, e.slot, e.pid, e.job_id,
       e.task_name, e.queue_name, e.cause, e.outcome, e.exit_code, e.signal,
       e.rss_bytes
FROM jsonb_to_recordset(%(events)s::jsonb) AS e(
    kind text, slot integer, pid integer, job_id bigint, task_name text,
    queue_name text, cause text, outcome text, exit_code integer, signal integer,
    rss_bytes bigint)

-- trim_events --
-- Keep only the latest rows of the events table (a walk of the primary key)
DELETE FROM procrastinate_prefork_events
WHERE id <= (SELECT id FROM procrastinate_prefork_events
             ORDER BY id DESC OFFSET %(kept)s LIMIT 1)

-- live_all_queues --
-- The queues that have waiting or running jobs (for a fleet that serves all), up to a limit
-- A loose index scan: one probe of the todo index per queue name, never a
-- walk of the todo jobs; the running jobs are few (as many as run now).
WITH RECURSIVE todo(name) AS (
    SELECT min(queue_name::text || '') FROM procrastinate_jobs
    WHERE status = 'todo'
    UNION ALL
    SELECT (SELECT min(j.queue_name::text || '') FROM procrastinate_jobs AS j
            WHERE j.status = 'todo' AND (j.queue_name::text || '') > todo.name)
    FROM todo WHERE todo.name IS NOT NULL
)
SELECT name FROM (
    SELECT name FROM todo WHERE name IS NOT NULL
    UNION
    SELECT queue_name FROM procrastinate_jobs WHERE status = 'doing'
) AS q ORDER BY name LIMIT %(limit)s

-- live_queue --
-- Waiting jobs (counted up to a cap), running jobs and the oldest waiting job's age, of one queue
-- Walks of the index of todo jobs by queue and id (on its expression, whose
-- statistics tell the planner how many todo jobs the queue has; see
-- sql/schema.sql): the oldest runnable job is the first, the count stops at
-- the cap. The running jobs are as many as run now (the index of doing
-- jobs). A job waits since it was deferred, or since its schedule.
SELECT (SELECT count(*) FROM (
            SELECT 1 FROM procrastinate_jobs AS j
            WHERE j.status = 'todo' AND (j.queue_name::text || '') = %(queue)s
              AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
            ORDER BY (j.queue_name::text || ''), j.id LIMIT %(cap)s) AS w)
         AS waiting,
       (SELECT count(*) FROM procrastinate_jobs AS r
        WHERE r.status = 'doing' AND r.queue_name = %(queue)s) AS running,
       (SELECT EXTRACT(EPOCH FROM now() - COALESCE(o.scheduled_at,
                (SELECT min(e.at) FROM procrastinate_events AS e
                 WHERE e.job_id = o.id AND e.type = 'deferred')))::float8
        FROM procrastinate_jobs AS o
        WHERE o.status = 'todo' AND (o.queue_name::text || '') = %(queue)s
          AND (o.scheduled_at IS NULL OR o.scheduled_at <= now())
        ORDER BY (o.queue_name::text || ''), o.id LIMIT 1) AS oldest_age

-- live_events --
-- The latest events of a host and a queue (either may be NULL: all), newest first
-- A walk of the primary key backwards; the table holds the latest rows only.
SELECT e.id, e.kind, e.host, e.slot, e.pid, e.job_id, e.task_name, e.queue_name,
       e.cause, e.outcome, e.exit_code, e.signal, e.rss_bytes,
       EXTRACT(EPOCH FROM now() - e.at)::float8 AS age
FROM procrastinate_prefork_events AS e
WHERE (%(host)s::text IS NULL OR e.host = %(host)s::text)
  AND (%(queue)s::text IS NULL OR e.queue_name = %(queue)s::text
       OR (e.queue_name IS NULL
           AND (e.queues IS NULL OR %(queue)s::text = ANY(e.queues))))
ORDER BY e.id DESC LIMIT %(limit)s

-- poll_runnable --
-- Runnable todo jobs of every queue, counted up to a limit (the supervisor's poll)
-- A job whose lock a running job holds is not runnable (a probe of
-- procrastinate's unique index of the doing jobs' locks).
SELECT count(*) FROM (SELECT 1 FROM procrastinate_jobs AS j
WHERE j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
AND (j.lock IS NULL OR NOT EXISTS (
    SELECT 1 FROM procrastinate_jobs AS d WHERE d.lock = j.lock AND d.status = 'doing'))
LIMIT %(limit)s) AS runnable

-- poll_runnable_in_queues --
-- Runnable todo jobs of the given queues, counted up to a limit (the supervisor's poll)
-- By the index of todo jobs by queue (not "queues IS NULL OR": see
-- count_runnable_in_queues); locks as in poll_runnable.
SELECT count(*) FROM (SELECT 1 FROM procrastinate_jobs AS j
WHERE j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
AND j.queue_name = ANY(%(queues)s)
AND (j.lock IS NULL OR NOT EXISTS (
    SELECT 1 FROM procrastinate_jobs AS d WHERE d.lock = j.lock AND d.status = 'doing'))
LIMIT %(limit)s) AS runnable
