DROP STATISTICS IF EXISTS procrastinate_prefork_jobs_queue_status;
DROP INDEX IF EXISTS procrastinate_prefork_jobs_todo_queue_idx;
DROP INDEX IF EXISTS procrastinate_prefork_jobs_doing_idx;
DROP INDEX IF EXISTS procrastinate_prefork_jobs_worker_id_idx;
DROP TABLE IF EXISTS procrastinate_prefork_sweep;
DROP TABLE IF EXISTS procrastinate_prefork_job_crashes;
DROP TABLE IF EXISTS procrastinate_prefork_processes;
