"""The probe server's HTTP handling, driven by hand the way the supervisor's
select loop drives it (procrastinate_prefork.observability.probe)."""

from __future__ import annotations

import select
import socket
import time

import pytest

from procrastinate_prefork.fleet.snapshot import FleetSnapshot
from procrastinate_prefork.observability import probe


def respond(path: str):
    if path == "/ok":
        return 200, {"fine": True}
    if path == "/bad":
        return 503, {"fine": False}
    if path == "/boom":
        raise RuntimeError("bug")
    return None


@pytest.fixture
def server():
    srv = probe.ProbeServer("127.0.0.1", 0, respond)
    yield srv
    srv.close()


def turn(
    server: probe.ProbeServer, timeout: float = 0.05, now: float | None = None
) -> None:
    readable, _, _ = select.select(server.filenos(), [], [], timeout)
    server.handle(readable, now=now)


def exchange(server: probe.ProbeServer, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(request)
        sock.settimeout(0.01)
        data = b""
        for _ in range(100):
            turn(server)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            data += chunk
        return data


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET /ok HTTP/1.0\r\n\r\n", b"200 OK"),
        (b"GET /ok?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", b"200 OK"),
        (b"GET /bad HTTP/1.0\r\n\r\n", b"503 Service Unavailable"),
        (b"GET /boom HTTP/1.0\r\n\r\n", b"503 Service Unavailable"),
        (b"GET /other HTTP/1.0\r\n\r\n", b"404 Not Found"),
        (b"POST /ok HTTP/1.0\r\nContent-Length: 0\r\n\r\n", b"405 Method Not Allowed"),
        (b"garbage\r\n\r\n", b"400 Bad Request"),
        (b"GET ok HTTP/1.0\r\n\r\n", b"400 Bad Request"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n", b"400 Bad Request"),
    ],
)
def test_answers(server, request_bytes, status):
    response = exchange(server, request_bytes)
    assert response.startswith(b"HTTP/1.0 " + status), response
    assert b"Connection: close" in response


def test_head_has_no_body(server):
    response = exchange(server, b"HEAD /ok HTTP/1.0\r\n\r\n")
    assert response.startswith(b"HTTP/1.0 200") and response.endswith(b"\r\n\r\n")


def test_oversized_request_gets_400(server):
    response = exchange(server, b"GET /ok HTTP/1.0\r\n" + b"X: y\r\n" * 3000)
    assert response.startswith(b"HTTP/1.0 400")


def test_request_in_pieces(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(b"GET /o")
        turn(server)
        turn(server)
        sock.sendall(b"k HTTP/1.0\r\n\r\n")
        turn(server)
        turn(server)
        assert sock.recv(1000).startswith(b"HTTP/1.0 200")


def test_silent_client_never_blocks_and_times_out(server):
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=2)
    try:
        started = time.monotonic()
        turn(server)  # accepts the silent client
        assert len(server.filenos()) == 2
        assert exchange(server, b"GET /ok HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200")
        assert time.monotonic() - started < 0.5
        turn(server, now=time.monotonic() + probe.CLIENT_TIMEOUT + 1)
        assert server.filenos() == [server.fileno()]
        assert silent.recv(100).startswith(b"HTTP/1.0 408")
    finally:
        silent.close()


def test_too_many_clients_drops_the_oldest(server):
    clients = [
        socket.create_connection(("127.0.0.1", server.port), timeout=2)
        for _ in range(probe.MAX_CLIENTS + 3)
    ]
    try:
        for _ in range(5):
            turn(server)
        assert len(server.filenos()) == 1 + probe.MAX_CLIENTS
    finally:
        for sock in clients:
            sock.close()


def test_port_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(
            probe.ProbeBindError,
            match=f"^cannot listen on the probe port 127.0.0.1:{port}: "
            "address already in use$",
        ):
            probe.ProbeServer("127.0.0.1", port, respond)


def test_routes():
    facts = FleetSnapshot(
        host="h",
        pid=1,
        phase="running",
        concurrency=1,
        crash_looping=True,
        database_up=True,
        child_timeout=60,
        children=[],
    )
    respond_ = probe.routes(lambda: facts)
    assert respond_("/live")[0] == 503
    assert respond_("/ready") == (
        503,
        {"status": "fail", "reasons": ["0 of 1 child(ren) ready"]},
    )
    assert respond_("/status")[1]["crash_loop"] is True
    assert respond_("/") is None
