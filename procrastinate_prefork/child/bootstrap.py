"""Loading the user's procrastinate app, and the fork-safety steps around it.

The supervisor loads the app once (so that bad input fails before anything is
forked), then, before every fork, makes sure it holds nothing a child could
share: no database connection, no pool, no event loop, no thread. After the
fork, the child drops whatever state the libraries kept, without sending
anything on sockets it may have inherited.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import procrastinate

from .. import compat

logger = logging.getLogger("procrastinate_prefork.bootstrap")


class BootstrapError(Exception):
    """The app cannot be loaded. The message is one line, for the user."""


def _reset_asgiref_executor() -> None:
    # asgiref keeps one class-level single-thread executor for thread-sensitive
    # sync_to_async calls; its thread does not exist after fork, so the first
    # such call in the child would wait forever on it.
    try:
        from asgiref.sync import SyncToAsync
    except ImportError:  # pragma: no cover - asgiref comes with procrastinate
        return
    SyncToAsync.single_thread_executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=1
    )


#: seconds the thread-sensitive thread gets to close its Django connections
_RELEASE_TIMEOUT = 10.0


def _release_asgiref_executor(
    in_its_thread: Callable[[], object] | None = None,
) -> None:
    """In the supervisor, before a fork: stop the thread of asgiref's
    thread-sensitive executor, if the process used it (Django's async ORM, a
    thread-sensitive ``sync_to_async`` in ``AppConfig.ready`` or an
    ``ON_APP_READY`` hook...). That idle thread would otherwise stay alive for
    good and the supervisor must not fork with threads running.

    ``in_its_thread`` runs there first: Django's connections are per thread,
    so the ones that thread opened can only be closed from it. The next
    thread-sensitive call, in either process, starts a new thread.
    """
    try:
        from asgiref.sync import SyncToAsync
    except ImportError:  # pragma: no cover - asgiref comes with procrastinate
        return
    executor = SyncToAsync.single_thread_executor
    if not getattr(executor, "_threads", None):
        return  # never used: it has no thread
    finished = True
    try:
        if in_its_thread is not None:
            executor.submit(in_its_thread).result(timeout=_RELEASE_TIMEOUT)
    except concurrent.futures.TimeoutError:
        finished = False  # busy: check_fork_safety will name the thread
    finally:
        executor.shutdown(wait=finished)
        SyncToAsync.single_thread_executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1
        )


_at_fork_registered = False


def register_fork_hooks() -> None:
    global _at_fork_registered
    if not _at_fork_registered:
        os.register_at_fork(after_in_child=_reset_asgiref_executor)
        _at_fork_registered = True


class Bootstrap:
    """How to find the app and the database for one kind of project."""

    #: shown in the banner
    description = ""
    #: set by the supervisor before any fork when the app's connections go
    #: through a transaction pooler (see ``pooler_safe``)
    transaction_pooled = False

    def pooler_safe(self, args: dict[str, Any]) -> dict[str, Any]:
        """``args`` with psycopg's prepared statements off when pooled: psycopg
        prepares a query after 5 runs on one connection, and a transaction
        pooler (PgBouncer before 1.21, or without max_prepared_statements)
        then sends its next run to a server session that never saw it. An
        explicit ``prepare_threshold`` of the user's is kept."""
        if not self.transaction_pooled:
            return args
        kwargs = dict(args.get("kwargs") or {})
        kwargs.setdefault("prepare_threshold", None)
        return {**args, "kwargs": kwargs}

    @property
    def app(self) -> procrastinate.App:
        raise NotImplementedError

    def connection_args(self) -> dict[str, Any]:
        """``PsycopgConnector`` arguments (conninfo and/or kwargs)."""
        raise NotImplementedError

    def schema_hint(self, tables: str) -> str:
        """How to create the missing ``tables``: ``"procrastinate"`` (its
        schema) or ``"prefork"`` (ours), in this kind of project."""
        app = getattr(self, "app_path", "...")
        program = (
            "procrastinate" if tables == "procrastinate" else "procrastinate-prefork"
        )
        return f"run `{program} --app {app} schema --apply`"

    def connection_hint(self) -> str:
        """Where the database connection comes from, in this kind of project:
        what to check when it cannot be opened."""
        return (
            "check the app's connector (its conninfo or kwargs) and the PG* "
            "environment variables"
        )

    def before_fork(self) -> None:
        """In the supervisor: release anything a child must not inherit."""
        _release_asgiref_executor()

    def after_fork_in_child(self, application_name: str | None = None) -> None:
        """In the child: forget inherited state without touching its sockets."""

    @contextlib.contextmanager
    def worker_app(self, connector: Any) -> Iterator[procrastinate.App]:
        with self.app.replace_connector(connector) as app:
            yield app

    _warned_threads: frozenset[str] = frozenset()

    def check_fork_safety(self) -> None:
        """Warn (once per set of threads) when someone else's threads run in
        the supervisor at fork time: e.g. an error reporter's background
        thread. The child does not get them, and a lock one of them held at
        the fork stays locked in the child."""
        names = frozenset(
            t.name for t in threading.enumerate() if t is not threading.main_thread()
        )
        if names and names != self._warned_threads:
            self._warned_threads = names
            logger.warning(
                "Forking while other threads run in the supervisor (%s): they do "
                "not exist in the children; start them in on_child_start instead",
                ", ".join(sorted(names)),
                extra={"action": "fork_with_threads"},
            )


class AppBootstrap(Bootstrap):
    """A procrastinate App object with a PsycopgConnector."""

    def __init__(self, app: procrastinate.App, description: str = "app (Python API)"):
        self._app = app
        try:
            self._args = compat.psycopg_pool_args(app.connector)
        except TypeError as exc:
            raise BootstrapError(str(exc)) from None
        self.description = description

    @property
    def app(self) -> procrastinate.App:
        return self._app

    def connection_args(self) -> dict[str, Any]:
        return self.pooler_safe(dict(self._args))


class PlainBootstrap(AppBootstrap):
    """``--app dotted.path``: the app is imported by the supervisor."""

    def __init__(self, app_path: str):
        self.app_path = app_path
        try:
            super().__init__(load_app(app_path), f"app {app_path}")
        except BootstrapError as exc:
            if str(exc).startswith("--app"):
                raise
            raise BootstrapError(f"--app {app_path}: {exc}") from None

    def connection_hint(self) -> str:
        return (
            f"check the connector of {self.app_path} (its conninfo or kwargs) "
            "and the PG* environment variables"
        )


def load_app(app_path: str) -> procrastinate.App:
    module_name, sep, attribute = app_path.replace(":", ".").rpartition(".")
    if not sep or not module_name:
        raise BootstrapError(
            f"--app {app_path!r}: expected a dotted path such as 'mypkg.tasks.app'"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time error of the user's module
        raise BootstrapError(
            f"--app {app_path!r}: cannot import {module_name!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    try:
        app = getattr(module, attribute)
    except AttributeError:
        raise BootstrapError(
            f"--app {app_path!r}: module {module_name!r} has no attribute {attribute!r}"
        ) from None
    if not isinstance(app, procrastinate.App):
        raise BootstrapError(
            f"--app {app_path!r}: {type(app).__name__} is not a procrastinate.App"
        )
    return app
