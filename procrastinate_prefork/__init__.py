"""A prefork worker for procrastinate: one supervisor, N forked worker processes."""

from __future__ import annotations

from .softlimit import SoftTimeLimitExceeded

__version__ = "0.1.0"
__all__ = ["SoftTimeLimitExceeded", "run_worker"]


def run_worker(app, **options):  # type: ignore[no-untyped-def]
    """Run a prefork fleet for ``app`` (see ``procrastinate_prefork.api``)."""
    from .api import run_worker as _run_worker

    return _run_worker(app, **options)
