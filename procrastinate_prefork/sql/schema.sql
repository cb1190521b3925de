-- procrastinate-prefork schema. Applied after procrastinate's own schema, by
-- the Django migration of procrastinate_prefork.contrib.django or by
-- `procrastinate-prefork --app X schema --apply`. Idempotent.

-- One row per supervisor and per child slot. A child row is keyed by its
-- supervisor and slot: a re-forked child updates its slot's row. The
-- supervisor writes all of them in one statement per heartbeat interval; a
-- child row's last_heartbeat is the child's own last sign of life as the
-- supervisor saw it (a wedged child's row ages while its supervisor's does not).
CREATE TABLE IF NOT EXISTS procrastinate_prefork_processes (
    id bigserial PRIMARY KEY,
    kind varchar(16) NOT NULL CHECK (kind IN ('supervisor', 'child')),
    host varchar(255) NOT NULL,
    pid integer NOT NULL,
    supervisor_id bigint REFERENCES procrastinate_prefork_processes (id) ON DELETE CASCADE,
    slot integer,
    worker_id bigint,
    state varchar(16) NOT NULL,
    job_id bigint,
    task_name varchar(255),
    job_started_at timestamptz,
    jobs_done bigint NOT NULL DEFAULT 0,
    restarts integer NOT NULL DEFAULT 0,
    rss_bytes bigint,
    crash_loop boolean NOT NULL DEFAULT false,
    -- supervisor rows: its configuration, and the heartbeat age after which
    -- it and its children count as gone (its --stalled-timeout)
    concurrency integer,
    queues varchar(255)[],
    heartbeat_interval double precision,
    stalled_timeout double precision,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_heartbeat timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'supervisor') = (supervisor_id IS NULL))
);

-- Added after the first release (hence ALTER ... IF NOT EXISTS, so that
-- `schema --apply` upgrades a table of an earlier version).
-- child rows: every job the child runs now (job_id is the oldest of them).
ALTER TABLE procrastinate_prefork_processes
    ADD COLUMN IF NOT EXISTS job_ids bigint[] NOT NULL DEFAULT '{}';
-- supervisor rows: who the process is, in terms that neither a reused pid nor
-- another PID namespace can fake (Linux; NULL elsewhere): the kernel's boot
-- id, the inode of its PID namespace, and its start time in clock ticks since
-- boot. A successor on the same host declares it dead on these only.
ALTER TABLE procrastinate_prefork_processes
    ADD COLUMN IF NOT EXISTS boot_id varchar(64),
    ADD COLUMN IF NOT EXISTS pid_namespace bigint,
    ADD COLUMN IF NOT EXISTS process_start bigint;

CREATE UNIQUE INDEX IF NOT EXISTS procrastinate_prefork_processes_slot_idx
    ON procrastinate_prefork_processes (supervisor_id, slot) WHERE kind = 'child';
CREATE INDEX IF NOT EXISTS procrastinate_prefork_processes_host_idx
    ON procrastinate_prefork_processes (host, kind);

-- How many times a job's process died under it (the poison-pill cap).
CREATE TABLE IF NOT EXISTS procrastinate_prefork_job_crashes (
    job_id bigint PRIMARY KEY REFERENCES procrastinate_jobs (id) ON DELETE CASCADE,
    crashes integer NOT NULL DEFAULT 0,
    last_cause varchar(255),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- When the fleet last swept for stalled jobs (one row). The sweep judges the
-- whole fleet, so one sweep per heartbeat interval serves every host: a
-- supervisor sweeps only when it claims the turn here, and the cost for the
-- database stays the same however many hosts there are.
CREATE TABLE IF NOT EXISTS procrastinate_prefork_sweep (
    id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    swept_at timestamptz NOT NULL
);

-- Indexes on procrastinate's job table, for queries of ours that would read
-- it whole otherwise (benchmarks/bigtables.py). Deleting a worker row (a dead
-- child's, or one the sweep prunes) makes procrastinate's foreign key set
-- worker_id to NULL on that worker's jobs: a full scan without this index.
CREATE INDEX IF NOT EXISTS procrastinate_prefork_jobs_worker_id_idx
    ON procrastinate_jobs (worker_id) WHERE worker_id IS NOT NULL;
-- The sweep walks the 'doing' jobs in id order; procrastinate's own index in
-- that order holds the 'todo' ones too.
CREATE INDEX IF NOT EXISTS procrastinate_prefork_jobs_doing_idx
    ON procrastinate_jobs (id) WHERE status = 'doing';
-- The autoscaler counts the todo jobs of its queues: by queue, not by a walk
-- of every todo job of every queue. The statistics tell the planner how
-- queues and statuses go together (a queue with a million finished jobs and
-- no todo job is not one to walk in priority order).
CREATE INDEX IF NOT EXISTS procrastinate_prefork_jobs_todo_queue_idx
    ON procrastinate_jobs (queue_name) WHERE status = 'todo';
CREATE STATISTICS IF NOT EXISTS procrastinate_prefork_jobs_queue_status
    (mcv) ON queue_name, status FROM procrastinate_jobs;

-- When the supervisor last wrote the row (a heartbeat, or for a child row a
-- change of its running jobs, which is written within about a second): the
-- age of what the row shows. Not last_heartbeat: that one proves liveness.
-- supervisor rows: jobs its children finished in each of the last minutes
-- ({"<unix minute>": count}), written with its heartbeat (the live page's chart).
ALTER TABLE procrastinate_prefork_processes
    ADD COLUMN IF NOT EXISTS written_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS finished_per_minute jsonb;
-- Several pools under one supervisor (issue 24). child rows: the name of the
-- pool the child belongs to (NULL in rows of earlier versions: the one pool,
-- 'default'); supervisor rows: its pools, in their configured order
-- ([{"name", "queues", "concurrency", "crash_loop"}], NULL before pools).
ALTER TABLE procrastinate_prefork_processes
    ADD COLUMN IF NOT EXISTS pool varchar(255),
    ADD COLUMN IF NOT EXISTS pools jsonb;

-- The latest child deaths, time limits and job recoveries, with their cause,
-- for the live page (the logs hold them too, but no page can read a log). The
-- supervisors write a row per event and keep the latest EVENTS_KEPT rows.
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

-- The live page's walks of one queue's todo jobs in id order (its oldest
-- waiting job, its waiting jobs up to a cap). On an expression, not the
-- column: ANALYZE then keeps statistics of the expression over the todo
-- jobs alone, and the planner knows which queues have many todo jobs and
-- which none (the column's statistics cover every job: a queue of a million
-- finished jobs and no todo job looks like a long walk, and the planner reads
-- every todo job of every queue instead).
CREATE INDEX IF NOT EXISTS procrastinate_prefork_jobs_todo_queue_id_idx
    ON procrastinate_jobs ((queue_name::text || ''), id) WHERE status = 'todo';

-- The supervisors the status views and probes read (not stopped), by host:
-- stopped rows of old processes pile up until a prune, and a probe must not
-- read them all (benchmarks/fleetstatus.py). Their children are found by the
-- slot index (supervisor_id first).
CREATE INDEX IF NOT EXISTS procrastinate_prefork_processes_live_idx
    ON procrastinate_prefork_processes (host, id)
    WHERE kind = 'supervisor' AND state <> 'stopped';

-- The queue depth metric's counts, counted by one supervisor for the fleet
-- once per heartbeat interval (they read procrastinate's job table) and read
-- from here by the others: which supervisor wrote them, and when.
ALTER TABLE procrastinate_prefork_sweep
    ADD COLUMN IF NOT EXISTS queue_jobs jsonb,
    ADD COLUMN IF NOT EXISTS queue_jobs_at timestamptz,
    ADD COLUMN IF NOT EXISTS queue_jobs_by bigint;
