# A part of ``Supervisor``: its methods take ``self: Supervisor`` so that mypy
# checks them against the whole class; mypy reports such self-types of a mixin
# as "erased type of self" (misc), which is what it is meant to be here.
# mypy: disable-error-code="misc"
"""Start-up: checks before anything is forked, the supervisor's row, and
the recovery of a dead predecessor's jobs."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import errors
from ..fleet import recovery, schema
from ..fleet import table as fleet
from ..fleet.identity import dead_predecessors, process_identity
from ..observability import liveprobe, probe, redact
from . import db

if TYPE_CHECKING:
    from .arbiter import Supervisor

logger = logging.getLogger("procrastinate_prefork.supervisor")


class StartupError(Exception):
    """The fleet cannot start. The message is one line, for the user."""


class Startup:
    """The supervisor's start-up checks (a part of ``Supervisor``)."""

    def _preflight(self: Supervisor) -> None:
        try:  # bound before anything is forked or registered
            self.probe = probe.open_for(self.config, self.snapshot, self.metrics_text)
        except probe.ProbeBindError as exc:
            raise StartupError(str(exc)) from None
        if self.probe is not None:  # before any session: the helper has none
            bound = liveprobe.stall_bound(self.db_timeouts.call)
            live = self.live_probe = liveprobe.LiveProbe(self.probe, bound)
            try:
                live.start()
            except OSError as exc:
                raise StartupError(f"cannot fork the probe process: {exc}") from None
            self.db.on_call = live.beacon.touch
        try:
            self._checks()
        except BaseException:
            if self.live_probe is not None:  # not left behind by a failed start
                self.live_probe.stop()
            raise

    def _checks(self: Supervisor) -> None:
        try:
            self.app.perform_import_paths()  # children inherit the imported tasks
        except Exception as exc:  # the user's task modules
            raise StartupError(
                f"cannot import the task modules: {type(exc).__name__}: {exc}"
            ) from None
        for option, limits in (
            ("--task-timeout", self.config.task_timeouts),
            ("--task-soft-timeout", self.config.task_soft_timeouts),
        ):
            unknown = sorted(set(limits) - set(self.app.tasks))
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
            self._check_pooling()
            conn = db.connect(
                self.bootstrap.connection_args(),
                self.db.app_name,
                self.db_timeouts,
                autocommit=True,
            )
        except StartupError:
            raise
        except Exception as exc:  # psycopg.Error or a bad conninfo
            # libpq quotes what it cannot parse, a password included
            first_line = redact.without_secrets(
                errors.one_line(exc), self.bootstrap.connection_args()
            )
            raise StartupError(
                f"cannot connect to the database: {first_line}; "
                + self.bootstrap.connection_hint()
            ) from None
        with conn, db.bounded(conn, self.db_timeouts):
            missing = schema.missing_tables(conn)
            if any(
                name.startswith("procrastinate_prefork") for name in missing
            ) and not any(
                not name.startswith("procrastinate_prefork") for name in missing
            ):
                raise StartupError(
                    "the procrastinate-prefork tables are missing: "
                    + self.bootstrap.schema_hint("prefork")
                )
            if missing:
                raise StartupError(
                    "the procrastinate schema is missing: "
                    + self.bootstrap.schema_hint("procrastinate")
                )
            identity = process_identity()
            self.supervisor_row = own_row = fleet.register_supervisor(
                conn,
                host=self.config.hostname,
                pid=self.pid,
                concurrency=self.concurrency,
                queues=self.config.queues,
                heartbeat_interval=self.config.heartbeat_interval,
                stalled_timeout=self.config.stalled_timeout,
                identity=identity,
            )
            for predecessor in dead_predecessors(
                conn,
                host=self.config.hostname,
                own_id=own_row,
                stalled_timeout=self.config.stalled_timeout,
                identity=identity,
            ):
                recovered = recovery.recover_worker_jobs(
                    conn,
                    predecessor["worker_ids"],
                    cause=f"supervisor pid {predecessor['pid']} on this host is gone",
                    max_crash_retries=self.config.max_crash_retries,
                )
                fleet.mark_stopped(conn, predecessor["id"])
                logger.warning(
                    "Predecessor supervisor (pid %s) is gone: recovered %d job(s)",
                    predecessor["pid"],
                    len(recovered),
                    extra={"action": "predecessor_recovered", "jobs": len(recovered)},
                )

    def _check_pooling(self: Supervisor) -> None:
        """Before any fork: are the app's connections pooled per transaction
        (PgBouncer), and where can the supervisor LISTEN?

        Pooled: prepared statements go off on every connection of the fleet
        (``Bootstrap.pooler_safe``); the supervisor's session moves to
        ``--listen-dsn`` if that one receives notifications, else it stops
        LISTENing and new jobs are found by the children's polling. Either way
        the supervisor still wakes children through their pipes after a
        recovery or a sweep."""
        config = self.config
        self.bootstrap.transaction_pooled = not db.listen_works(
            self.bootstrap.connection_args(), self.db.app_name
        )
        if config.listen_dsn is not None:
            # on its own: the app's kwargs (host, port...) would override it
            self.db.connection_args = {"conninfo": config.listen_dsn}
            try:
                direct = db.listen_works(self.db.connection_args, self.db.app_name)
            except Exception as exc:  # psycopg.Error: libpq never shows a password
                first_line = errors.one_line(exc)
                raise StartupError(
                    f"cannot connect with --listen-dsn: {first_line}"
                ) from None
            if not direct:  # pooled too: same precaution as the app's
                self.db.connection_args["kwargs"] = {"prepare_threshold": None}
        else:
            direct = not self.bootstrap.transaction_pooled
            self.db.connection_args = self.bootstrap.connection_args()
        if self.bootstrap.transaction_pooled:
            logger.info(
                "The database connections go through a transaction pooler: "
                "prepared statements off",
                extra={
                    "action": "transaction_pooling",
                    "listen_dsn": config.listen_dsn is not None,
                },
            )
        if not direct and config.listen_notify:
            self.db.channels = []  # a LISTEN there would receive nothing
            logger.warning(
                "LISTEN receives no notification on %s: new jobs are found by "
                "polling every %g s (give --listen-dsn a direct connection)",
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
