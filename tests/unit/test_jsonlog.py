"""The JSON log formatter: one object per line, identity fields, extras."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from procrastinate_prefork.observability import jsonlog


@pytest.fixture(autouse=True)
def _supervisor_role():
    yield
    jsonlog.set_process("supervisor", None)


def _format(**extra):
    record = logging.makeLogRecord(
        {
            "name": "procrastinate_prefork.supervisor",
            "levelno": logging.ERROR,
            "levelname": "ERROR",
            "msg": "two\nlines %s",
            "args": ("!",),
            **extra,
        }
    )
    line = jsonlog.JsonFormatter().format(record)
    assert "\n" not in line
    return json.loads(line)


def test_identity_and_extras_of_a_supervisor_line():
    data = _format(action="child_exited", slot=3, pid=99, cause="signal 9")
    assert data["message"] == "two\nlines !" and data["level"] == "ERROR"
    assert (data["role"], data["slot"], data["child_pid"]) == ("supervisor", 3, 99)
    assert data["pid"] != 99 and data["action"] == "child_exited"
    assert data["time"].endswith("+00:00")


def test_a_child_line_keeps_its_own_slot():
    jsonlog.set_process("child", 2)
    data = _format(action="x", slot=7, level="custom")
    assert (data["role"], data["slot"]) == ("child", 2)
    assert (data["extra_slot"], data["extra_level"]) == (7, "custom")


def test_a_child_of_one_of_several_pools_names_its_pool():
    jsonlog.set_process("child", 1024, "io")
    try:
        data = _format(action="x")
        assert (data["role"], data["slot"], data["pool"]) == ("child", 1024, "io")
    finally:
        jsonlog._role.pop("pool")
        jsonlog.set_process("supervisor", None)


def test_procrastinate_job_fields_and_exception_in_one_field():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        exc_info = sys.exc_info()
    data = _format(
        exc_info=exc_info,
        job={"id": 5, "task_name": "t", "queue": "q", "task_kwargs": "..."},
        worker={"id": 8, "name": "w"},
    )
    assert (data["job_id"], data["task_name"], data["queue"], data["worker_id"]) == (
        5,
        "t",
        "q",
        8,
    )
    assert "RuntimeError: boom" in data["exception"]
    assert data["exception"].startswith("Traceback")


def test_banner_is_json_only_when_the_root_handler_formats_json():
    assert jsonlog.banner("a\nb") == "a\nb"
    handler = logging.StreamHandler()
    handler.setFormatter(jsonlog.JsonFormatter())
    logging.getLogger().addHandler(handler)
    try:
        data = json.loads(jsonlog.banner("a\nb"))
    finally:
        logging.getLogger().removeHandler(handler)
    assert (data["message"], data["action"], data["role"]) == (
        "a\nb",
        "banner",
        "supervisor",
    )
