"""The benchmark harness still works: one tiny drain, one repetition.

Benchmarks are not timed tests: nothing here looks at the speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg

from ..fleet_helper import REPO


def _bench_databases(pg_url: str) -> set[str]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_%'"
        ).fetchall()
    return {row[0] for row in rows}


def test_bench_harness_smoke(pg_url, tmp_path):
    before = _bench_databases(pg_url)
    env = {**os.environ, "DATABASE_URL": pg_url, "PYTHONUNBUFFERED": "1"}
    env.pop("BENCH_COMMAND", None)
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "run.py"),
            "--only",
            "cpu20,noop_async",
            "--ns",
            "1",
            "--kinds",
            "stock,prefork",
            "--scale",
            "0.01",
            "--reps",
            "1",
            "--no-celery",
            "--settle",
            "0.2",
            "--poll",
            "0.2",
            "--noise-seconds",
            "0.2",
            "--quiet-below",
            "1",
            "--out-dir",
            str(tmp_path),
        ],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((tmp_path / "benchmarks.json").read_text())
    drains = {(d["scenario"], d["kind"], d["n"]): d for d in results["drains"]}
    assert set(drains) == {
        ("cpu20", "stock", 1),
        ("cpu20", "prefork", 1),
        ("noop_async", "stock", 1),
        ("noop_async", "prefork", 1),
    }
    for drain in drains.values():
        assert drain["reps"] == 1
        assert drain["rate"]["median"] > 0
    assert results["calibration"]["iterations_per_ms"] > 0
    markdown = (tmp_path / "benchmarks.md").read_text()
    assert "## Targets" in markdown and "No-op async jobs" in markdown
    # no database of the harness is left behind
    assert _bench_databases(pg_url) <= before
