"""Everything we touch that is private in procrastinate (and psycopg_pool),
in one place.

Supported: procrastinate 3.9 and later 3.x (3.9 added ``worker_middleware``,
which the child uses to report its current job); tested against 3.9 and 3.10.
If procrastinate changes one of these, this package is the only one to
adapt; ``tests/unit/test_compat.py`` says so.

- ``connector``: the app's connector arguments, a pool that reconnects promptly;
- ``worker``: the Worker built as procrastinate builds it, its registration
  and fetches watched;
- ``ends``: a job's end recorded only if still this run's, with the next fetch;
- ``outages``: a worker riding out a database outage or a deleted worker row;
- ``fetches``: fetches nobody would find (a lost reply, an unrecorded worker)
  and wake-ups that came during a fetch;
- ``periodic``: the Worker's own periodic deferrer, run in one child per host.

The child installs the job manager's wrappers in ``child.runner``, in an
order each module's docstring states."""

from .connector import POOL_RECONNECT_MAX_DELAY, PromptReconnectPool, psycopg_pool_args
from .ends import finish_only_owned_jobs, on_job_ended
from .outages import restore_deleted_worker_row, survive_database_outages
from .worker import make_worker, on_fetch, on_worker_registered

__all__ = [
    "POOL_RECONNECT_MAX_DELAY",
    "PromptReconnectPool",
    "finish_only_owned_jobs",
    "make_worker",
    "on_fetch",
    "on_job_ended",
    "on_worker_registered",
    "psycopg_pool_args",
    "restore_deleted_worker_row",
    "survive_database_outages",
]
