"""A child retired while its stdout cannot be flushed (a pipe whose reader
went away, a file on a full disk) exits like any other: it never runs the
supervisor's loop, so its busy sibling keeps its job and the job runs once.

The fleet's stdout is block-buffered (no PYTHONUNBUFFERED), as under systemd,
Docker or any pipe; its stderr (the logs) goes to the test's log file.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

from ..fleet_helper import Fleet, defer, jobs, wait_for

BUFFERED = {"PYTHONUNBUFFERED": ""}
LONG_JOB = 10.0  # seconds: still running when its sibling retires
#: what a child running the supervisor's code would log
SUPERVISOR_ONLY = ("supervisor_crashed", "fork_failed", "supervisor_stopped")


def _ready_pid(fleet: Fleet, exclude: set[int]) -> int:
    def find() -> int | None:
        ready = [e["pid"] for e in fleet.events("child_ready")]
        fresh = [pid for pid in ready if pid not in exclude]
        return fresh[-1] if fresh else None

    return wait_for(find, timeout=30, message="a new child to be ready")


def _strays(fleet: Fleet) -> list[dict[str, Any]]:
    """Records only a supervisor logs, logged by another process of the fleet."""
    return [
        e
        for e in fleet.events()
        if e["process"] != fleet.pid
        and (e["action"] in SUPERVISOR_ONLY or e["action"] == "child_exited")
    ]


def _exit_of(fleet: Fleet, pid: int) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        found = [e for e in fleet.events("child_exited") if e["pid"] == pid]
        return found[0] if found else None

    return wait_for(find, timeout=30, message=f"child {pid} to exit")


def retire_a_child_that_printed(
    fleet: Fleet, db_url: str, break_output: Callable[[], None]
) -> None:
    """``--concurrency 1``, SIGHUP, a long job on child A, SIGTTIN adds child B,
    B prints without a newline, the output breaks, SIGTTOU retires B."""
    old = set(fleet.wait_children(1))
    fleet.signal(signal.SIGHUP)  # every child from now on is forked by the loop
    a = _ready_pid(fleet, exclude=old)
    wait_for(lambda: fleet.child_pids() == [a], message="the old child to go")
    [long_job] = defer(db_url, "sleep", seconds=LONG_JOB)
    assert fleet.running_child(long_job) == a
    fleet.signal(signal.SIGTTIN)
    b = _ready_pid(fleet, exclude=old | {a})
    [said] = defer(db_url, "say", text="a line without its newline")
    wait_for(lambda: (said, 0, b) in fleet.marks("end"), message="child B to print")
    break_output()
    fleet.signal(signal.SIGTTOU)  # the idle child retires: B
    wait_for(
        lambda: b not in fleet.child_pids() or _strays(fleet),
        timeout=30,
        message="child B to exit",
    )
    assert _strays(fleet) == []
    exit_b = _exit_of(fleet, b)

    assert exit_b["process"] == fleet.pid and exit_b["exit_code"] == 0, exit_b
    # B retired while A was still busy: the job a stray supervisor would kill
    assert (long_job, 0, a) not in fleet.marks("end")
    wait_for(
        lambda: jobs(db_url, [long_job])[0]["status"] == "succeeded",
        timeout=LONG_JOB + 20,
        message="the long job to succeed",
    )
    assert [(j, p) for j, _, p in fleet.marks("start") if j == long_job] == [
        (long_job, a)
    ]
    assert fleet.events("job_recovered") == []
    assert fleet.child_pids() == [a]
    assert _strays(fleet) == []
    assert fleet.stop() == 0, fleet.log()


def test_retired_child_with_a_broken_stdout_pipe_never_runs_the_supervisor(
    fleet, db_url
):
    read_end, write_end = os.pipe()
    try:
        fleet.start("--concurrency", "1", env=BUFFERED, stdout=write_end)
    finally:
        os.close(write_end)
    reader = [read_end]

    def reader_goes_away() -> None:  # a log shipper or journald restarting
        os.close(reader.pop())

    try:
        retire_a_child_that_printed(fleet, db_url, reader_goes_away)
    finally:
        for fd in reader:
            os.close(fd)


def test_retired_child_with_stdout_on_a_full_disk_never_runs_the_supervisor(
    fleet, db_url, full_disk
):
    with open(full_disk / "stdout.log", "wb") as out:
        fleet.start("--concurrency", "1", env=BUFFERED, stdout=out)
    retire_a_child_that_printed(fleet, db_url, lambda: None)
