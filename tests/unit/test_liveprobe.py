"""The probe process's view of the loop
(procrastinate_prefork.observability.liveprobe) and the connection attempts
the loop drives (procrastinate_prefork.supervisor.connecting)."""

from __future__ import annotations

import os
import socket
import time

import psycopg
import pytest

from procrastinate_prefork.observability import liveprobe
from procrastinate_prefork.supervisor import connecting, db

BOUND = 7.0


def test_a_loop_that_turns_is_alive_with_its_own_verdict():
    beacon = liveprobe.Beacon()
    beacon.publish(True, [])
    assert liveprobe.verdict(beacon, BOUND, time.monotonic()) == (
        200,
        {"status": "ok", "reasons": []},
    )
    beacon.publish(False, ["crash loop: children keep dying right after they start"])
    status, body = liveprobe.verdict(beacon, BOUND, time.monotonic())
    assert status == 503 and body["reasons"] == [
        "crash loop: children keep dying right after they start"
    ]


def test_a_loop_silent_beyond_its_bound_is_dead():
    beacon = liveprobe.Beacon()
    beacon.publish(True, [])
    last = beacon.read()[0]
    assert liveprobe.verdict(beacon, BOUND, last + BOUND - 0.1)[0] == 200
    status, body = liveprobe.verdict(beacon, BOUND, last + BOUND + 0.1)
    assert status == 503 and body["status"] == "fail"
    beacon.touch()  # a database call starting: progress again
    assert liveprobe.verdict(beacon, BOUND, beacon.read()[0] + 1)[0] == 200


def test_a_starting_supervisor_is_not_judged_until_its_first_turn():
    beacon = liveprobe.Beacon()
    last, started, _, _ = beacon.read()
    assert not started
    assert liveprobe.verdict(beacon, BOUND, last + 1)[0] == 200
    assert liveprobe.verdict(beacon, BOUND, last + BOUND + 1)[0] == 503


def test_the_beacon_is_shared_with_a_forked_reader():
    beacon = liveprobe.Beacon()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the reader: waits for the parent's verdict
        os.close(w)
        os.read(r, 1)
        _, started, ok, reasons = beacon.read()
        os._exit(0 if started and not ok and reasons == ["x"] else 1)
    os.close(r)
    beacon.publish(False, ["x"])
    os.write(w, b"!")
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_writer_stopped_mid_write_does_not_hang_the_reader():
    """The supervisor SIGSTOPped while it publishes: the page stays odd."""
    beacon = liveprobe.Beacon()
    stopped_at = time.monotonic()
    liveprobe._HEAD.pack_into(beacon._mem, 0, 7, stopped_at, True, False, 0)
    assert beacon.read() == (stopped_at, True, True, [])
    assert liveprobe.verdict(beacon, BOUND, stopped_at + 1)[0] == 200
    assert liveprobe.verdict(beacon, BOUND, stopped_at + BOUND + 1)[0] == 503


def test_the_stall_bound_covers_the_longest_database_call():
    assert liveprobe.stall_bound(6.0) > 6.0


def test_a_connection_attempt_completes_through_the_loop(db_url):
    attempt = connecting.Connecting(db_url)
    conn = None
    while conn is None:
        conn = attempt.advance(wait=1.0)
    with conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_silent_server_does_not_hold_the_attempt():
    """Accepted by the kernel, never answered: what a black hole looks like."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        attempt = connecting.Connecting(
            f"host=127.0.0.1 port={port} user=x dbname=x sslmode=disable",
            timeout=0.5,
        )
        assert attempt.advance() is None  # nothing yet, and no wait
        with pytest.raises(psycopg.errors.ConnectionTimeout):
            while attempt.advance(wait=0.2) is None:
                pass


def test_connection_options_reach_the_connection_not_libpq(db_url):
    """prepare_threshold=None (a transaction pooler) must survive the
    non-blocking path: libpq would never see it."""
    attempt = db.connect_nowait(
        {"conninfo": db_url, "kwargs": {"prepare_threshold": None}}, "t", None
    )
    conn = None
    while conn is None:
        conn = attempt.advance(wait=1.0)
    with conn:
        assert conn.prepare_threshold is None and conn.autocommit
