"""The option table of the prefork worker.

Every option is declared once, in ``OPTIONS``: its command-line flag, its
environment variables, its key in the Django ``PROCRASTINATE_PREFORK`` settings
dict, its default and its meaning. The CLI, the Django command and the
configuration reference in the docs are all generated from this table. Its
last entries, the logging options, are declared in ``logging_options``.
"""

from __future__ import annotations

import os
import socket

from ..observability.metrics import LABEL_LIMIT
from ..supervisor.policy import STALLED_TIMEOUT
from .declaration import Option
from .log_options import LOGGING_OPTIONS
from .parsing import (
    MAX_CHILDREN,
    autoscale,
    boolean,
    choice,
    dotted_path,
    int_between,
    listen_dsn,
    non_empty_str,
    optional,
    queues,
    seconds,
    task_soft_timeouts,
    task_timeouts,
)
from .pool_options import TEXT_FORM, declarations


def default_concurrency() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


OPTIONS: tuple[Option, ...] = (
    Option(
        "concurrency",
        ("-c", "--concurrency"),
        int_between(1, MAX_CHILDREN),
        default_concurrency,
        "Number of child processes to fork.",
        metavar="N",
        default_doc="number of usable CPUs",
    ),
    Option(
        "child_concurrency",
        ("--child-concurrency",),
        int_between(1, 1000),
        1,
        "Jobs one child runs at once (procrastinate's worker concurrency: useful "
        "for async jobs; sync jobs of one child share its GIL).",
        group="worker",
        env=("PROCRASTINATE_WORKER_CONCURRENCY",),
        metavar="N",
    ),
    Option(
        "queues",
        ("-q", "--queues"),
        queues,
        None,
        "Comma-separated queues to work on (default: all queues); a name has at "
        "most 128 characters.",
        group="worker",
        env=("PROCRASTINATE_WORKER_QUEUES",),
        metavar="QUEUES",
        default_doc="all queues",
    ),
    Option(
        "pools",
        ("--pool",),
        declarations,
        (),
        "Several pools of children under one supervisor, each with its own "
        "queues and per-child options: --pool cpu=reports:4 --pool "
        "io=emails,webhooks:1:50 ('*': every queue, for a pool alone); no other "
        "per-child option on the command line then.",
        metavar=TEXT_FORM,
        repeatable=True,
        default_doc="one pool of the top-level options",
    ),
    Option(
        "name",
        ("-n", "--name"),
        non_empty_str,
        "worker",
        "Worker name, passed to procrastinate (job context, logs); each child "
        "appends its slot.",
        group="worker",
        env=("PROCRASTINATE_WORKER_NAME",),
    ),
    Option(
        "wait",
        ("-w", "--wait"),
        boolean,
        True,
        "Keep waiting for new jobs; with --one-shot, a child exits once its "
        "worker finds the queues empty and is not replaced (a child stopped "
        "for any other reason is), and the supervisor exits 0 when every "
        "child has.",
        group="worker",
        env=("PROCRASTINATE_WORKER_WAIT",),
        negative_flag="--one-shot",
    ),
    Option(
        "fetch_job_polling_interval",
        ("--fetch-job-polling-interval",),
        seconds("fetch_job_polling_interval"),
        5.0,
        "Seconds between the supervisor's polls for runnable jobs, one query "
        "per pool (a fallback to LISTEN/NOTIFY that also finds scheduled jobs "
        "whose time has come); it wakes idle children through their pipes. "
        "A child polls on its own only when those polls are two intervals "
        "late (the supervisor stopped, its session down). At most 3600 s.",
        group="worker",
        env=("PROCRASTINATE_WORKER_FETCH_JOB_POLLING_INTERVAL",),
    ),
    Option(
        "abort_job_polling_interval",
        ("--abort-job-polling-interval",),
        seconds("abort_job_polling_interval"),
        5.0,
        "Seconds between polls for abort requests; at most 3600 s.",
        group="worker",
        env=("PROCRASTINATE_WORKER_ABORT_JOB_POLLING_INTERVAL",),
    ),
    Option(
        "shutdown_graceful_timeout",
        ("--shutdown-graceful-timeout",),
        seconds("shutdown_graceful_timeout", allow_zero=True),
        30.0,
        "On SIGTERM/SIGINT, seconds the running jobs of all children get (one "
        "shared deadline). Then procrastinate aborts async jobs, and children "
        "still busy a second later are killed: their sync jobs are retried. "
        "At most 86400 s.",
        group="worker",
        env=("PROCRASTINATE_WORKER_SHUTDOWN_GRACEFUL_TIMEOUT",),
    ),
    Option(
        "listen_notify",
        ("--listen-notify",),
        boolean,
        True,
        "Wake children on new jobs through the supervisor's single LISTEN "
        "session; without it, the supervisor's polls wake them.",
        group="worker",
        env=("PROCRASTINATE_WORKER_LISTEN_NOTIFY",),
        negative_flag="--no-listen-notify",
    ),
    Option(
        "listen_dsn",
        ("--listen-dsn",),
        listen_dsn,
        None,
        "libpq connection string of a direct (unpooled) connection for the "
        "supervisor's session (LISTEN, heartbeats, sweeps, recoveries), when the "
        "app's database URL goes through PgBouncer in transaction mode; without "
        "it the fleet then finds new jobs by polling.",
        metavar="DSN",
        default_doc="the app's connection",
    ),
    Option(
        "delete_jobs",
        ("--delete-jobs",),
        choice("never", "successful", "always"),
        "never",
        "Delete finished jobs: never, successful or always.",
        metavar="{never,successful,always}",
        group="worker",
        env=("PROCRASTINATE_WORKER_DELETE_JOBS",),
    ),
    Option(
        "stalled_timeout",
        ("--stalled-timeout",),
        seconds("stalled_timeout"),
        STALLED_TIMEOUT,
        "A 'doing' job of this supervisor's children whose worker has not sent "
        "a heartbeat for this many seconds is retried by the sweep of any "
        "supervisor (recorded in the fleet table: each host is judged by its own). "
        "At most 86400 s.",
    ),
    Option(
        "stock_worker_timeout",
        ("--stock-worker-timeout",),
        seconds("stock_worker_timeout"),
        3600.0,
        "A 'doing' job of a worker no prefork supervisor runs (a stock "
        "procrastinate worker) is retried by the sweep only once that worker has "
        "sent no heartbeat for this many seconds (a job that lost its worker row: "
        "once it has run this long). Make it longer than a stock worker's drain. "
        "At most 86400 s.",
    ),
    Option(
        "heartbeat_interval",
        ("--heartbeat-interval",),
        seconds("heartbeat_interval"),
        5.0,
        "Seconds between the supervisor's heartbeats (its children's worker rows "
        "and the fleet table); the fleet sweeps for stalled jobs once per interval "
        "of the supervisor that claims the turn. At most 3600 s. It also "
        "sets the bounds of the supervisor's database calls (statement timeout: "
        "this interval within 1..10 s; lock timeout: half of it, at most 1 s; its own "
        "deadline: one second more).",
    ),
    Option(
        "child_timeout",
        ("--child-timeout",),
        seconds("child_timeout"),
        60.0,
        "A child whose event loop has not reported for this many seconds is "
        "considered wedged: it is killed, its jobs retried and it is replaced. "
        "At most 86400 s.",
    ),
    Option(
        "job_timeout",
        ("--job-timeout",),
        optional(seconds("job_timeout")),
        None,
        "Hard time limit in seconds for any job: its child is stopped and "
        "replaced and the job fails (or retries if its retry strategy says so). "
        "At most 2592000 s (30 days).",
        default_doc="no limit",
    ),
    Option(
        "task_timeouts",
        ("--task-timeout",),
        task_timeouts,
        dict,
        "Per-task hard time limits, NAME=SECONDS (repeatable; a dict in Django "
        "settings); at most 2592000 s (30 days). A NAME that is not a "
        "registered task is warned about at start.",
        metavar="NAME=SECONDS",
        repeatable=True,
        default_doc="none",
    ),
    Option(
        "soft_job_timeout",
        ("--soft-job-timeout",),
        optional(seconds("soft_job_timeout")),
        None,
        "Soft time limit in seconds for any job: past it, the job's child raises "
        "procrastinate_prefork.SoftTimeLimitExceeded in the task (a sync task at "
        "its next Python instruction; an async task at its current await), which "
        "it may catch to clean up; the child lives on. Must be below the hard "
        "limit of the same task. At most 2592000 s (30 days).",
        default_doc="no limit",
    ),
    Option(
        "task_soft_timeouts",
        ("--task-soft-timeout",),
        task_soft_timeouts,
        dict,
        "Per-task soft time limits, NAME=SECONDS (repeatable; a dict in Django "
        "settings); at most 2592000 s (30 days).",
        metavar="NAME=SECONDS",
        repeatable=True,
        default_doc="none",
    ),
    Option(
        "max_crash_retries",
        ("--max-crash-retries",),
        int_between(0, 1000),
        3,
        "A job whose child died under it is retried at most this many times, "
        "then it is marked failed (poison-pill cap).",
    ),
    Option(
        "hostname",
        ("--hostname",),
        non_empty_str,
        socket.gethostname,
        "Host name recorded in the fleet table (defaults to the machine's).",
        default_doc="the machine's host name",
    ),
    Option(
        "health_port",
        ("--health-port",),
        optional(int_between(1, 65535)),
        None,
        "Serve the probe endpoints /live, /ready and /status on this TCP port "
        "(from the supervisor's own loop: no thread, no extra process), and "
        "/metrics with the metrics extra.",
        metavar="PORT",
        default_doc="off",
    ),
    Option(
        "health_host",
        ("--health-host",),
        non_empty_str,
        "127.0.0.1",
        "Address the probe port listens on (0.0.0.0 for a Kubernetes probe).",
        metavar="HOST",
    ),
    Option(
        "metrics_label_limit",
        ("--metrics-label-limit",),
        int_between(1, 100_000),
        LABEL_LIMIT,
        "Most (queue, task) pairs with series of their own in /metrics, and "
        "most queues in its queue depth; the others are counted under the "
        "label value __other__ (queue and task names are chosen by whoever "
        "defers jobs).",
        metavar="N",
    ),
    Option(
        "restart_backoff_max",
        ("--restart-backoff-max",),
        seconds("restart_backoff_max"),
        30.0,
        "Upper bound in seconds of the delay before re-forking a child that keeps "
        "dying early; at most 3600 s.",
    ),
    Option(
        "max_jobs_per_child",
        ("--max-jobs-per-child",),
        optional(int_between(1, 10**9)),
        None,
        "Recycle a child after it has run this many jobs: it finishes its "
        "jobs, exits cleanly and is replaced.",
        metavar="N",
        default_doc="never",
    ),
    Option(
        "max_jobs_jitter",
        ("--max-jobs-jitter",),
        int_between(0, 10**9),
        0,
        "Add a random 0..J to each child's --max-jobs-per-child so that children "
        "do not all recycle at once.",
        metavar="J",
    ),
    Option(
        "max_memory_per_child",
        ("--max-memory-per-child",),
        optional(int_between(1, 10**7)),
        None,
        "Recycle a child once its resident memory exceeds this many MiB (checked "
        "after each job).",
        metavar="MB",
        default_doc="never",
    ),
    Option(
        "autoscale",
        ("--autoscale",),
        autoscale,
        None,
        "MIN,MAX: start MIN children, grow toward MAX while runnable jobs wait, "
        "shrink toward MIN when idle (overrides --concurrency).",
        metavar="MIN,MAX",
        default_doc="off",
    ),
    Option(
        "autoscale_cooldown",
        ("--autoscale-cooldown",),
        seconds("autoscale_cooldown"),
        30.0,
        "Seconds without waiting jobs before autoscale removes an idle child; "
        "at most 86400 s.",
    ),
    Option(
        "on_child_start",
        ("--on-child-start",),
        dotted_path,
        None,
        "Dotted path of a callable run in each child after its bootstrap, with "
        "keyword arguments slot and pid.",
        metavar="PATH",
        default_doc="none",
    ),
    Option(
        "on_child_exit",
        ("--on-child-exit",),
        dotted_path,
        None,
        "Dotted path of a callable run in the supervisor when a child exits, with "
        "keyword arguments slot, pid, exit_code and signal.",
        metavar="PATH",
        default_doc="none",
    ),
    *LOGGING_OPTIONS,
)

OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}
