"""A forked child never returns into the supervisor's code.

Real forks through ``children.fork_child``, the supervisor's own call: in the
child a fault is injected at one step of its way out (building its spec, its
reset, its worker, the log of a crash, the flush of a log handler, of stdout,
of stderr; exceptions, ``SystemExit``, ``KeyboardInterrupt``, a pipe whose
reader is gone, a full disk). Whatever the fault, the child must end with the
exit code its run earned, and the code after the fork call, here the test's
own, must never run in it: if it does, the child leaves a marker and exits
with ``CAME_BACK``.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from procrastinate_prefork.child import runner as child_module
from procrastinate_prefork.child.bootstrap import BootstrapError, PlainBootstrap
from procrastinate_prefork.child.jobtracker import JobTracker
from procrastinate_prefork.child.runner import EXIT_BOOT_ERROR, ChildSpec
from procrastinate_prefork.child.scoreboard import Scoreboard, SlotWriter
from procrastinate_prefork.config import build_config
from procrastinate_prefork.supervisor import children, policy
from procrastinate_prefork.supervisor.system import System

CAME_BACK = 97  # the exit code of a child that ran the code after the fork
#: a fault injected in the child: it runs there, before the spec is returned
Fault = Callable[[], None]


class Interrupting(logging.Handler):
    """A log handler that raises ``exc`` when it emits or flushes."""

    def __init__(self, exc: BaseException, *, on: str):
        super().__init__()
        self.exc, self.on = exc, on

    def emit(self, record: logging.LogRecord) -> None:
        if self.on == "emit":
            raise self.exc

    def flush(self) -> None:
        if self.on == "flush":
            raise self.exc


class RaisingStream(io.StringIO):
    def __init__(self, exc: BaseException):
        super().__init__()
        self.exc = exc

    def flush(self) -> None:
        raise self.exc


def _serve_returning(code: int, crash: BaseException | None = None) -> Fault:
    async def serve(spec: ChildSpec) -> int:
        if crash is not None:
            raise crash
        return code

    def install() -> None:
        child_module._serve = serve  # type: ignore[assignment]

    return install


def _broken_pipe_stdout() -> None:
    """stdout becomes a block-buffered pipe holding unwritten output, whose
    reader is gone (a log shipper that restarted): its flush raises
    BrokenPipeError (Python ignores SIGPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    sys.stdout = io.TextIOWrapper(open(write_end, "wb", buffering=8192))
    sys.stdout.write("no newline, still in the buffer")


def _stream_on_full_disk(directory: Path, name: str) -> None:
    stream = open(directory / f"{name}.log", "w", buffering=8192)
    stream.write("still in the buffer")
    setattr(sys, name, stream)


def _with(*faults: Fault) -> Fault:
    def install() -> None:
        for fault in faults:
            fault()

    return install


def _log_handler(exc: BaseException, on: str) -> Fault:
    return lambda: logging.getLogger().addHandler(Interrupting(exc, on=on))


def _raise(exc: BaseException) -> Fault:
    def fault() -> None:
        raise exc

    return fault


def _boot_fails() -> None:
    def after_fork_in_child(self: Any, application_name: str | None = None) -> None:
        raise BootstrapError("the app cannot start")

    PlainBootstrap.after_fork_in_child = after_fork_in_child  # type: ignore[method-assign]


def fork_with_fault(fault: Fault) -> tuple[int | None, int | None, str]:
    """Fork a child the supervisor's way with ``fault`` injected in it; its
    (exit code, signal) and what it did in our code if it came back."""
    parent = os.getpid()
    config = build_config({"concurrency": 1, "hostname": "exit-test"}, {})
    bootstrap = PlainBootstrap("tests.apps.plain_app.app")
    board = Scoreboard(1, 1)
    read_end, write_end = os.pipe()

    def spec(wake_r: int) -> ChildSpec:  # runs in the child
        fault()
        return ChildSpec(
            slot=0,
            config=config,
            bootstrap=bootstrap,
            scoreboard=board,
            wake_fd=wake_r,
            supervisor_pid=parent,
            inherited_fds=[read_end],
        )

    def came_back(what: str) -> None:
        os.write(write_end, what.encode())
        os._exit(CAME_BACK)

    try:
        try:
            child = children.fork_child(
                System(), 0, scoreboard=board, generation=0, spec=spec
            )
        except BaseException as exc:
            if os.getpid() != parent:
                came_back(f"raised {type(exc).__name__}: {exc}")
            raise
        if os.getpid() != parent:
            came_back("returned from fork_child")
        os.close(write_end)
        _, status = os.waitpid(child.pid, 0)
        os.close(child.wake_fd)
        with open(read_end, "rb") as marker:
            what = marker.read().decode()
    finally:
        board.close()
    code, signum, _ = policy.describe_exit(status)
    return code, signum, what


BROKEN = OSError(32, "Broken pipe")


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        # between the fork and the child's run
        (_raise(RuntimeError("spec")), 1),
        (_raise(SystemExit(0)), 1),
        (_raise(KeyboardInterrupt()), 1),
        # the run, and the log of its crash
        (_serve_returning(0, crash=KeyboardInterrupt()), 1),
        (_serve_returning(0, crash=SystemExit(0)), 1),
        (
            _with(
                _serve_returning(0, crash=RuntimeError("crash")),
                _log_handler(SystemExit(0), on="emit"),
            ),
            1,
        ),
        (
            _with(_boot_fails, _log_handler(KeyboardInterrupt(), on="emit")),
            EXIT_BOOT_ERROR,
        ),
        # the flushes on the way out
        (_with(_serve_returning(0), _log_handler(KeyboardInterrupt(), "flush")), 0),
        (_with(_serve_returning(0), _broken_pipe_stdout), 0),
        (
            _with(
                _serve_returning(policy.EXIT_QUEUES_EMPTY),
                lambda: setattr(sys, "stderr", RaisingStream(SystemExit(2))),
            ),
            policy.EXIT_QUEUES_EMPTY,
        ),
        (
            _with(
                _serve_returning(0),
                _broken_pipe_stdout,
                lambda: setattr(sys, "stderr", RaisingStream(BROKEN)),
            ),
            0,
        ),
    ],
    ids=[
        "spec-raises",
        "spec-system-exit",
        "spec-keyboard-interrupt",
        "run-keyboard-interrupt",
        "run-system-exit",
        "crash-log-raises",
        "boot-error-log-raises",
        "handler-flush-raises",
        "stdout-broken-pipe",
        "stderr-flush-system-exit",
        "stdout-and-stderr-broken",
    ],
)
def test_a_child_never_returns_into_the_supervisors_code(fault, expected):
    code, signum, came_back = fork_with_fault(fault)
    assert came_back == ""
    assert (code, signum) == (expected, None)


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_child_exits_with_its_code_when_its_output_is_on_a_full_disk(
    full_disk, stream
):
    fault = _with(
        _serve_returning(policy.EXIT_RECYCLE),
        lambda: _stream_on_full_disk(full_disk, stream),
    )
    code, signum, came_back = fork_with_fault(fault)
    assert came_back == ""
    assert (code, signum) == (policy.EXIT_RECYCLE, None)


def test_a_child_does_not_write_again_what_the_supervisor_printed(monkeypatch):
    """Output the supervisor's block-buffered stdout still holds at the fork
    (an app that prints at import time) is written once, not once more by
    every child when it exits."""
    read_end, write_end = os.pipe()
    stdout = io.TextIOWrapper(open(write_end, "wb", buffering=8192))
    monkeypatch.setattr(sys, "stdout", stdout)
    stdout.write("printed by the supervisor;")
    code, signum, came_back = fork_with_fault(_serve_returning(0))
    assert (code, signum, came_back) == (0, None, "")
    stdout.close()
    with open(read_end, "rb") as pipe:
        assert pipe.read() == b"printed by the supervisor;"


@pytest.mark.parametrize(
    ("fetches", "draining", "recycling", "expected"),
    [
        ([True, False], False, False, policy.EXIT_QUEUES_EMPTY),
        ([False, True], False, False, 0),  # stopped after a job: not "empty"
        ([], False, False, 0),  # stopped before any fetch
        ([True, False], True, False, 0),  # asked to stop as well (SIGTERM)
        ([True, False], False, True, policy.EXIT_RECYCLE),
    ],
)
def test_a_child_says_queues_empty_only_after_an_empty_fetch(
    fetches, draining, recycling, expected
):
    board = Scoreboard(1, 1)
    try:
        config = build_config({"concurrency": 1, "wait": False}, {})
        tracker = JobTracker(SlotWriter(board, 0), config)
        for found in fetches:
            tracker.fetched(found)
        tracker.draining, tracker.recycling = draining, recycling
        assert tracker.exit_code() == expected
    finally:
        board.close()
