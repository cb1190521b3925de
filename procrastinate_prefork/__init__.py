"""A prefork worker for procrastinate: one supervisor, N forked worker processes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .child.softlimit import SoftTimeLimitExceeded

if TYPE_CHECKING:  # procrastinate is imported when run_worker is called
    import procrastinate

__version__ = "0.1.0"
__all__ = ["SoftTimeLimitExceeded", "run_worker"]


def run_worker(app: procrastinate.App, **options: Any) -> int:
    """Run a prefork fleet for ``app`` (see ``procrastinate_prefork.api``)."""
    from .api import run_worker as _run_worker

    return _run_worker(app, **options)
