"""fork() failures, made real with a pids cgroup (skipped where the machine
has no writable cgroup-v1 pids controller)."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from ..fleet_helper import APP, wait_for

PIDS_ROOT = Path("/sys/fs/cgroup/pids")


@pytest.fixture
def pids_cgroup():
    if not os.access(PIDS_ROOT, os.W_OK):
        pytest.skip("no writable pids cgroup controller here")
    group = PIDS_ROOT / f"prefork-test-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a pids cgroup: {exc}")
    yield group
    for pid in (group / "cgroup.procs").read_text().split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not (group / "cgroup.procs").read_text().strip(), timeout=10)
    group.rmdir()


def _command(group: Path, *args: str) -> list[str]:
    # join the cgroup, then become the supervisor
    return [
        "sh",
        "-c",
        f'echo $$ > {group}/cgroup.procs && exec "$@"',
        "sh",
        sys.executable,
        "-m",
        "procrastinate_prefork.cli",
        "--app",
        APP,
        "worker",
        *args,
    ]


def test_fork_failure_at_start_fails_fast(fleet, pids_cgroup, db_url):
    (pids_cgroup / "pids.max").write_text("2")  # the supervisor and one child
    fleet.start(command=_command(pids_cgroup, "--concurrency", "3"), wait_ready=False)
    assert fleet.wait(timeout=30) == 1
    assert "Traceback" not in fleet.log()
    assert fleet.events("fleet_ready") == []
    assert not (pids_cgroup / "cgroup.procs").read_text().strip()  # nothing left
    with psycopg.connect(db_url, autocommit=True) as conn:
        live = conn.execute(
            "SELECT count(*) FROM procrastinate_prefork_processes "
            "WHERE state <> 'stopped'"
        ).fetchone()
    assert live == (0,)  # no live-looking row of the failed start


def test_fork_failure_later_is_retried(fleet, pids_cgroup):
    fleet.start(command=_command(pids_cgroup, "--concurrency", "2"))
    fleet.wait_children(2)
    current = (pids_cgroup / "pids.current").read_text().strip()
    (pids_cgroup / "pids.max").write_text(current)  # no room for one more
    fleet.signal(signal.SIGTTIN)
    wait_for(lambda: fleet.events("fork_failed"), message="the fork failure")
    assert len(fleet.child_pids()) == 2 and not fleet.exited()
    (pids_cgroup / "pids.max").write_text("max")
    fleet.wait_children(3, timeout=10)  # retried at a later tick
    assert fleet.stop() == 0
