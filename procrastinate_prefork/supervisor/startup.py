"""Start-up: checks before anything is forked, the supervisor's row, and
the recovery of a dead predecessor's jobs: functions given what they check
and the database session they configure."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import psycopg

from .. import errors
from ..child.bootstrap import Bootstrap
from ..config import PreforkConfig
from ..config.pools import pools_of
from ..fleet import recovery, schema
from ..fleet import table as fleet
from ..fleet.identity import dead_predecessors, process_identity
from ..fleet.snapshot import FleetSnapshot
from ..observability import liveprobe, probe, redact
from . import db

logger = logging.getLogger("procrastinate_prefork.supervisor")


class StartupError(Exception):
    """The fleet cannot start. The message is one line, for the user."""


def open_probe(
    config: PreforkConfig,
    snapshot: Callable[[], FleetSnapshot],
    metrics_text: Callable[[], str],
) -> probe.ProbeServer | None:
    """The --health-port server, bound before anything is forked or
    registered."""
    try:
        return probe.open_for(config, snapshot, metrics_text)
    except probe.ProbeBindError as exc:
        raise StartupError(str(exc)) from None


def open_probes(
    config: PreforkConfig,
    session: db.SupervisorDB,
    snapshot: Callable[[], FleetSnapshot],
    metrics_text: Callable[[], str],
) -> tuple[probe.ProbeServer | None, liveprobe.LiveProbe | None]:
    """The --health-port server and the process that answers its /live,
    started before any session (the probe process has none)."""
    server = open_probe(config, snapshot, metrics_text)
    if server is None:
        return None, None
    timeouts = session.timeouts or db.Timeouts.for_heartbeat(config.heartbeat_interval)
    live = liveprobe.LiveProbe(server, liveprobe.stall_bound(timeouts.call))
    try:
        live.start()
    except OSError as exc:
        raise StartupError(f"cannot fork the probe process: {exc}") from None
    session.on_call = live.beacon.touch
    return server, live


def preflight(
    config: PreforkConfig,
    bootstrap: Bootstrap,
    session: db.SupervisorDB,
    *,
    pid: int,
    concurrency: int,
    queues: Sequence[str] | None,
    live_probe: liveprobe.LiveProbe | None = None,
) -> int:
    """Check what the fleet needs, register the supervisor (its children's
    number and the queues of all its pools) and recover a dead predecessor's
    jobs; the supervisor's row in the fleet table. On
    failure, the probe process is not left behind."""
    try:
        return _checks(
            config,
            bootstrap,
            session,
            pid=pid,
            concurrency=concurrency,
            queues=queues,
        )
    except BaseException as exc:
        if live_probe is not None:
            live_probe.stop()
        if isinstance(exc, psycopg.OperationalError) and db.is_timeout(exc):
            raise StartupError(
                f"the database did not answer in time ({errors.one_line(exc)})"
            ) from None
        raise


def _checks(
    config: PreforkConfig,
    bootstrap: Bootstrap,
    session: db.SupervisorDB,
    *,
    pid: int,
    concurrency: int,
    queues: Sequence[str] | None,
) -> int:
    try:
        bootstrap.app.perform_import_paths()  # children inherit the imported tasks
    except Exception as exc:  # the user's task modules
        raise StartupError(
            f"cannot import the task modules: {type(exc).__name__}: {exc}"
        ) from None
    specs = pools_of(config)  # each pool may have limits of its own
    for option, limits in (
        ("--task-timeout", {t for s in specs for t in s.config.task_timeouts}),
        (
            "--task-soft-timeout",
            {t for s in specs for t in s.config.task_soft_timeouts},
        ),
    ):
        unknown = sorted(limits - set(bootstrap.app.tasks))
        if unknown:  # a typo would leave the task without its limit, silently
            logger.warning(
                "%s names no registered task: %s (their limits apply to nothing)",
                option,
                ", ".join(unknown),
                extra={
                    "action": "unknown_task_timeout",
                    "tasks": unknown,
                    "option": option,
                },
            )
    try:
        check_pooling(config, bootstrap, session)
        conn = db.connect(
            bootstrap.connection_args(),
            session.app_name,
            session.timeouts,
            autocommit=True,
        )
    except StartupError:
        raise
    except Exception as exc:  # psycopg.Error or a bad conninfo
        # libpq quotes what it cannot parse, a password included
        first_line = redact.without_secrets(
            errors.one_line(exc), bootstrap.connection_args()
        )
        raise StartupError(
            f"cannot connect to the database: {first_line}; "
            + bootstrap.connection_hint()
        ) from None
    with conn, db.bounded(conn, session.timeouts):
        missing = schema.missing_tables(conn)
        if any(
            name.startswith("procrastinate_prefork") for name in missing
        ) and not any(not name.startswith("procrastinate_prefork") for name in missing):
            raise StartupError(
                "the procrastinate-prefork tables are missing: "
                + bootstrap.schema_hint("prefork")
            )
        if missing:
            raise StartupError(
                "the procrastinate schema is missing: "
                + bootstrap.schema_hint("procrastinate")
            )
        identity = process_identity()
        own_row = fleet.register_supervisor(
            conn,
            host=config.hostname,
            pid=pid,
            concurrency=concurrency,
            queues=queues,
            heartbeat_interval=config.heartbeat_interval,
            stalled_timeout=config.stalled_timeout,
            identity=identity,
        )
        for predecessor in dead_predecessors(
            conn,
            host=config.hostname,
            own_id=own_row,
            stalled_timeout=config.stalled_timeout,
            identity=identity,
        ):
            recovered = recovery.recover_worker_jobs(
                conn,
                predecessor["worker_ids"],
                cause=f"supervisor pid {predecessor['pid']} on this host is gone",
                max_crash_retries=config.max_crash_retries,
            )
            fleet.mark_stopped(conn, predecessor["id"])
            logger.warning(
                "Predecessor supervisor (pid %s) is gone: recovered %d job(s)",
                predecessor["pid"],
                len(recovered),
                extra={"action": "predecessor_recovered", "jobs": len(recovered)},
            )
    return own_row


def check_pooling(
    config: PreforkConfig, bootstrap: Bootstrap, session: db.SupervisorDB
) -> None:
    """Before any fork: are the app's connections pooled per transaction
    (PgBouncer), and where can the supervisor LISTEN?

    Pooled: prepared statements go off on every connection of the fleet
    (``Bootstrap.pooler_safe``); the supervisor's session moves to
    ``--listen-dsn`` if that one receives notifications, else it stops
    LISTENing and new jobs are found by its polls (``poller``). Either way
    the supervisor still wakes children through their pipes after a
    recovery or a sweep."""
    bootstrap.transaction_pooled = not db.listen_works(
        bootstrap.connection_args(), session.app_name
    )
    if config.listen_dsn is not None:
        # on its own: the app's kwargs (host, port...) would override it
        session.connection_args = {"conninfo": config.listen_dsn}
        try:
            direct = db.listen_works(session.connection_args, session.app_name)
        except Exception as exc:  # psycopg.Error: libpq never shows a password
            first_line = errors.one_line(exc)
            raise StartupError(
                f"cannot connect with --listen-dsn: {first_line}"
            ) from None
        if not direct:  # pooled too: same precaution as the app's
            session.connection_args["kwargs"] = {"prepare_threshold": None}
    else:
        direct = not bootstrap.transaction_pooled
        session.connection_args = bootstrap.connection_args()
    if bootstrap.transaction_pooled:
        logger.info(
            "The database connections go through a transaction pooler: "
            "prepared statements off",
            extra={
                "action": "transaction_pooling",
                "listen_dsn": config.listen_dsn is not None,
            },
        )
    if not direct and config.listen_notify:
        session.channels = []  # a LISTEN there would receive nothing
        logger.warning(
            "LISTEN receives no notification on %s: new jobs are found by "
            "the supervisor's polls every %g s (give --listen-dsn a direct "
            "connection)",
            "the --listen-dsn connection"
            if config.listen_dsn
            else "the database connection",
            config.fetch_job_polling_interval,
            extra={
                "action": "listen_unavailable",
                "fallback": "polling",
                "polling_interval": config.fetch_job_polling_interval,
            },
        )
