"""Every benchmark script still imports: the full run does not start the
named-only ones (big tables, PgBouncer, profile), so a renamed function of the
package would otherwise break them unseen."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
# the Celery app needs the bench extra (celery, redis)
NEEDS_EXTRA = {"celery_app"}


@pytest.mark.parametrize(
    "name",
    sorted(
        p.stem
        for p in BENCHMARKS.glob("*.py")
        if p.stem != "__init__" and p.stem not in NEEDS_EXTRA
    ),
)
def test_benchmark_module_imports(name):
    importlib.import_module(f"benchmarks.{name}")
