DROP TABLE IF EXISTS procrastinate_prefork_job_crashes;
DROP TABLE IF EXISTS procrastinate_prefork_processes;
