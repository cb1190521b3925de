"""--log-format json: every line of a fleet's output is one JSON object, with
the process's role and slot, structured fields, redacted job arguments and
exceptions as one field."""

from __future__ import annotations

import json
import os
import signal

from ..fleet_helper import defer, jobs, wait_for


def test_every_line_of_a_fleet_log_is_json(fleet, db_url):
    fleet.start(
        "--concurrency",
        "2",
        "--log-format",
        "json",
        "--task-soft-timeout",
        "soft_loop=1",
        "--job-timeout",
        "20",
        "--max-crash-retries",
        "0",
    )
    ok = defer(db_url, "cpu", count=2, ms=1.2345)  # the "secret"
    [failing] = defer(db_url, "fails")
    [soft] = defer(db_url, "soft_loop", seconds=60)
    [killed] = defer(db_url, "sleep", seconds=60)
    victim = fleet.running_child(killed)
    fleet.running_child(soft)
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: all(
            r["status"] in ("succeeded", "failed")
            for r in jobs(db_url, [*ok, failing, soft, killed])
        ),
        timeout=30,
        message="every job to end",
    )
    assert fleet.stop(timeout=60) == 0
    log = fleet.log()
    records = [json.loads(line) for line in log.splitlines()]  # every line
    assert "1.2345" not in log
    for record in records:
        assert {"time", "level", "logger", "message", "pid", "role", "slot"} <= set(
            record
        )
    roles = {(r["role"], r["pid"]) for r in records}
    assert ("supervisor", fleet.pid) in roles
    children = [r for r in records if r["role"] == "child"]
    assert children and all(isinstance(r["slot"], int) for r in children)
    assert all(r["pid"] != fleet.pid for r in children)
    by_action: dict[str, list[dict]] = {}
    for record in records:
        by_action.setdefault(record.get("action", ""), []).append(record)
    [error] = [r for r in by_action["job_error"] if r["job_id"] == failing]
    assert error["task_name"] == "fails" and error["queue"] == "default"
    assert "RuntimeError" in error["exception"] and "Traceback" in error["exception"]
    assert {r["job_id"] for r in by_action["job_success"]} == set(ok)
    assert all(r["job"]["task_kwargs"] == "..." for r in by_action["start_job"])
    [soft_event] = by_action["soft_time_limit"]
    assert soft_event["job_id"] == soft and soft_event["role"] == "child"
    [exited] = [r for r in by_action["child_exited"] if r.get("child_pid") == victim]
    assert exited["role"] == "supervisor" and isinstance(exited["slot"], int)
    assert [r["job_id"] for r in by_action["job_recovered"]] == [killed]
    assert by_action["banner"][0]["role"] == "supervisor"
