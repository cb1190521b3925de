"""``/live`` and the supervisor's loop while the database black-holes
connections (a partition, a proxy that stops forwarding): the probe answers
at once, the loop keeps reaping, re-forking and enforcing time limits, and
the fleet recovers when the path is back (this replaces test_loop's former
black-hole test). ``/live`` fails only when the loop
itself stops turning."""

from __future__ import annotations

import os
import signal
import time

from ..blackhole import BlackHole
from ..fleet_helper import defer, free_port, http_status, jobs, log_events, wait_for
from .test_health import fleet_rows, try_probe

JSON_APP = "tests.apps.json_log_app.app"
HOST = "live-hole"
#: heartbeat 1 s: database calls bounded at 2 s, /live's stall bound 7 s
FAST = ("--heartbeat-interval", "1", "--stalled-timeout", "10")
POLLS = 60


def test_live_answers_while_the_database_black_holes_connections(fleet, db_url):
    hole = BlackHole.to(db_url)
    port = free_port()
    try:
        fleet.start(
            "--concurrency",
            "2",
            "--hostname",
            HOST,
            "--health-port",
            str(port),
            "--job-timeout",
            "4",
            *FAST,
            app=JSON_APP,
            env={"DATABASE_URL": hole.url(db_url)},
        )
        [job_id] = defer(db_url, "sleep", seconds=60)
        runner = fleet.running_child(job_id)
        hole.swallowing.set()  # old connections and new ones alike
        answers: list[int | str] = []
        # /status is the loop's own answer: once the outage is known, the
        # loop turns without waiting on connection attempts
        statuses: list[int | str] = []
        victim = None
        for _ in range(POLLS):
            answers.append(http_status(port, "/live", 1.0))
            if victim is not None:
                statuses.append(http_status(port, "/status", 1.0))
            elif log_events(fleet, "db_unreachable"):
                victim = next(p for p in fleet.child_pids() if p != runner)
                os.kill(victim, signal.SIGKILL)
            time.sleep(0.2)
        assert answers == [200] * POLLS, answers
        assert victim is not None, "the supervisor never noticed the black hole"
        assert statuses == [200] * len(statuses), statuses
        # all of this happened while the database was still unreachable; the
        # session open when the hole opened hit its call bound
        assert not log_events(fleet, "db_reconnected")
        assert log_events(fleet, "db_timeout")
        assert [e["job_id"] for e in log_events(fleet, "time_limit")] == [job_id]
        exited = {e["pid"] for e in log_events(fleet, "child_exited")}
        assert {victim, runner} <= exited
        started = {e["pid"] for e in log_events(fleet, "child_started")}
        assert len(started - {victim, runner}) == 2  # both slots forked again
        assert len(fleet.child_pids()) == 2

        hole.swallowing.clear()  # the path is back: so is the fleet
        wait_for(
            lambda: log_events(fleet, "db_reconnected"),
            timeout=30,
            message="the supervisor to reconnect",
        )
        beat = fleet_rows(db_url)[0]["last_heartbeat"]
        wait_for(
            lambda: fleet_rows(db_url)[0]["last_heartbeat"] > beat,
            timeout=20,
            message="heartbeats to resume",
        )
        wait_for(
            lambda: jobs(db_url, [job_id])[0]["status"] == "failed",
            timeout=30,
            message="the timed-out job to be recorded as failed",
        )
        wait_for(
            lambda: (r := try_probe(port, "/ready")) is not None and r[0] == 200,
            timeout=30,
            message="/ready to answer 200 again",
        )
        assert fleet.stop() == 0
    finally:
        hole.close()


def test_live_fails_when_the_loop_stops_turning(fleet):
    """The supervisor SIGSTOPped: its probe process still answers, and says
    dead once the loop has been silent longer than its bound."""
    port = free_port()
    fleet.start("--concurrency", "1", "--health-port", str(port), *FAST, app=JSON_APP)
    assert http_status(port, "/live", 1.0) == 200
    os.kill(fleet.pid, signal.SIGSTOP)
    try:
        failed = wait_for(
            lambda: (r := try_probe(port, "/live")) is not None and r[0] == 503 and r,
            timeout=30,
            interval=0.5,
            message="/live to fail",
        )
        assert failed[1]["status"] == "fail"
    finally:
        os.kill(fleet.pid, signal.SIGCONT)
    wait_for(
        lambda: (r := try_probe(port, "/live")) is not None and r[0] == 200,
        timeout=10,
        message="/live to answer 200 again",
    )
    assert fleet.stop() == 0


def test_a_killed_probe_process_is_replaced(fleet):
    port = free_port()
    fleet.start("--concurrency", "1", "--health-port", str(port), app=JSON_APP)
    first = fleet.probe_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(
        lambda: log_events(fleet, "probe_restarted"),
        timeout=10,
        message="the probe process to be replaced",
    )
    wait_for(
        lambda: (
            http_status(port, "/live", 1.0) == 200
            and http_status(port, "/status", 1.0) == 200
        ),
        timeout=10,
        message="the probe port to answer again",
    )
    assert fleet.probe_pid() not in (None, first)
    assert fleet.stop() == 0
    assert http_status(port, "/live", 1.0) == "ConnectionRefusedError"
