"""Running the prefork worker from Python, for plain procrastinate apps.

    import procrastinate_prefork
    procrastinate_prefork.run_worker(app, concurrency=4, on_child_start=setup)
    procrastinate_prefork.run_worker(app, pools={
        "cpu": {"queues": ["reports"], "concurrency": 4},
        "io": {"queues": ["emails"], "concurrency": 1, "child_concurrency": 50},
    })

Options are the names of ``config.OPTIONS`` (as in the Django
``PROCRASTINATE_PREFORK`` setting); they win over environment variables.
Hooks may be callables here.
"""

from __future__ import annotations

from typing import Any

import procrastinate

from .child.bootstrap import AppBootstrap
from .config import build_config


def run_worker(app: procrastinate.App, **options: Any) -> int:
    """Run the supervisor until it stops; returns its exit code.

    Logging is the caller's: this does not configure the root logger (no
    handler, format or level is installed; the ``log_format`` options are not
    used); an explicit ``log_level`` applies to the ``procrastinate_prefork``
    logger only. Configure logging (e.g. ``logging.basicConfig``) before
    calling this to see the supervisor's and children's records.

    Raises ``config.ConfigError`` on a bad option, ``bootstrap.BootstrapError``
    when the app's connector is not a PsycopgConnector."""
    from .launcher import run_fleet

    return run_fleet(build_config(options), AppBootstrap(app), configure_logging=False)
