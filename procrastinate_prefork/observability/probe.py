"""The probe port: a tiny HTTP/1.0 server driven by the supervisor's loop.

No thread and no process of its own: the supervisor forks, and forking with a
thread alive is unsafe. The listening socket and every client socket are
non-blocking and sit in the supervisor's ``select``; a client that sends its
request slowly (or never) only holds a slot until ``CLIENT_TIMEOUT``, it never
blocks the loop. Answering writes a small response; that write waits at most
``WRITE_BUDGET`` for a client that does not read.

    GET /live    200 while the loop runs and the fleet is not crash-looping
                 or entirely wedged, else 503
    GET /ready   200 once every child finished its bootstrap and the database
                 answers, else 503
    GET /status  200, this supervisor's JSON (``health.supervisor_report``)
    GET /metrics 200, Prometheus text (``metrics``); 404 and a hint without
                 prometheus-client

Other paths get 404, other methods 405, garbage 400. HEAD works like GET
without a body.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import select
import socket
import time
from collections.abc import Callable, Collection
from typing import Any

from ..fleet import health
from ..fleet.snapshot import FleetSnapshot
from . import metrics

CLIENT_TIMEOUT = 2.0  # to send a complete request
WRITE_BUDGET = 0.05  # longest the loop waits for a client to take the answer
MAX_REQUEST = 8192
MAX_CLIENTS = 32
ACCEPT_BATCH = 16

Responder = Callable[[str], "tuple[int, dict[str, Any] | str] | None"]
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    503: "Service Unavailable",
}


class ProbeBindError(Exception):
    """The probe port cannot be opened. The message is one line."""


@dataclasses.dataclass
class _Client:
    sock: socket.socket
    deadline: float
    data: bytes = b""


class ProbeServer:
    """Listen on ``host:port``; ``respond(path)`` returns (status, JSON body)
    for a known path, None for an unknown one."""

    def __init__(
        self,
        host: str | None,
        port: int,
        respond: Responder,
        sock: socket.socket | None = None,
    ):
        self.respond = respond
        self._clients: dict[int, _Client] = {}
        #: where clients come from while a helper holds the port (liveprobe)
        self._inbox: socket.socket | None = None
        if sock is not None:  # already listening
            self.sock, self.address = sock, sock.getsockname()[:2]
            return
        assert host is not None  # noqa: S101 - one or the other
        try:
            infos = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except socket.gaierror as exc:
            raise ProbeBindError(
                "cannot open the probe port: "
                f"bad --health-host {host!r}: {exc.strerror}"
            ) from None
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(64)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            why = (
                "address already in use"
                if exc.errno == errno.EADDRINUSE
                else (exc.strerror or str(exc))
            )
            raise ProbeBindError(
                f"cannot listen on the probe port {_show(host, port)}: {why}"
            ) from None
        self.sock = sock
        self.address = sock.getsockname()[:2]

    @property
    def port(self) -> int:
        return int(self.address[1])

    def fileno(self) -> int:
        return self.sock.fileno()

    def filenos(self) -> list[int]:
        """Every descriptor to watch for reading: the listening socket (or
        the helper's socket pair) and the clients whose request is not
        complete yet."""
        source = self._inbox if self._inbox is not None else self.sock
        return [source.fileno(), *self._clients]

    def own_fds(self) -> list[int]:
        """Every descriptor of the probe, for a fork to close."""
        inbox = [self._inbox.fileno()] if self._inbox is not None else []
        return [self.sock.fileno(), *inbox, *self._clients]

    def take_clients_from(self, inbox: socket.socket | None) -> None:
        """Serve the clients a helper passes on ``inbox`` (None: accept
        them again on the port)."""
        if self._inbox is not None:
            self._inbox.close()
        self._inbox = inbox

    def close(self) -> None:
        for client in self._clients.values():
            client.sock.close()
        self._clients.clear()
        self.take_clients_from(None)
        self.sock.close()

    # ----------------------------------------------------------------- loop

    def handle(self, readable: Collection[int], now: float | None = None) -> None:
        """Accept, read and answer what is ready; drop clients past their
        deadline. Call on every turn of the loop (it never blocks long)."""
        now = time.monotonic() if now is None else now
        if self._inbox is not None and self._inbox.fileno() in readable:
            self._receive(now)
        if self._inbox is None and self.sock.fileno() in readable:
            self._accept(now)
        for fd in [fd for fd in self._clients if fd in readable]:
            self._read(fd)
        for fd, client in list(self._clients.items()):
            if now >= client.deadline:
                self._answer(fd, 408, {"error": "request timeout"})

    def _accept(self, now: float) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ECONNABORTED, EMFILE: try next turn
                return
            sock.setblocking(False)
            if len(self._clients) >= MAX_CLIENTS:  # drop the oldest
                oldest = min(self._clients, key=lambda fd: self._clients[fd].deadline)
                self._drop(oldest)
            self._clients[sock.fileno()] = _Client(sock, now + CLIENT_TIMEOUT)

    def _receive(self, now: float) -> None:
        """Clients the helper read a request from: answer them now."""
        assert self._inbox is not None  # noqa: S101 - called when set
        for _ in range(ACCEPT_BATCH):
            try:
                data, fds, _, _ = socket.recv_fds(self._inbox, MAX_REQUEST + 1, 1)
            except OSError:  # nothing more now (or the helper is gone)
                return
            if not fds:
                return  # the helper is gone: reaped and replaced this turn
            sock = socket.socket(fileno=fds[0])
            sock.setblocking(False)
            self._clients[sock.fileno()] = _Client(sock, now + CLIENT_TIMEOUT, data)
            self._serve(sock.fileno())

    def _read(self, fd: int) -> None:
        client = self._clients[fd]
        try:
            chunk = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(fd)
            return
        client.data += chunk
        head_done = b"\r\n\r\n" in client.data or b"\n\n" in client.data
        if len(client.data) > MAX_REQUEST:
            self._answer(fd, 400, {"error": "request too large"})
        elif head_done or not chunk:  # complete, or the client closed its side
            self._serve(fd)

    def _serve(self, fd: int) -> None:
        line = self._clients[fd].data.split(b"\n", 1)[0].rstrip(b"\r")
        parts = line.split(b" ")
        if (
            len(parts) != 3
            or not parts[2].startswith(b"HTTP/")
            or not parts[1].startswith(b"/")
        ):
            self._answer(fd, 400, {"error": "bad request"})
            return
        method = parts[0]
        path = parts[1].split(b"?", 1)[0].decode("latin-1")
        if method not in (b"GET", b"HEAD"):
            self._answer(
                fd,
                405,
                {"error": "method not allowed"},
                extra_headers="Allow: GET, HEAD\r\n",
            )
            return
        try:
            result = self.respond(path)
        except Exception:  # a bug here must not take the supervisor down
            result = (503, {"error": "internal error"})
        if result is None:
            self._answer(
                fd,
                404,
                {"error": "not found", "paths": list(PATHS)},
                head=method == b"HEAD",
            )
        else:
            self._answer(fd, result[0], result[1], head=method == b"HEAD")

    def _answer(
        self,
        fd: int,
        status: int,
        body: dict[str, Any] | str,
        head: bool = False,
        extra_headers: str = "",
    ) -> None:
        if isinstance(body, str):
            payload, kind = body.encode(), TEXT_TYPE
        else:
            payload = (json.dumps(body, indent=None) + "\n").encode()
            kind = "application/json"
        header = (
            f"HTTP/1.0 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: {kind}\r\n"
            f"Content-Length: {len(payload)}\r\n"
            "Cache-Control: no-store\r\n"
            f"{extra_headers}"
            "Connection: close\r\n\r\n"
        ).encode()
        data = header if head else header + payload
        sock = self._clients[fd].sock
        deadline = time.monotonic() + WRITE_BUDGET
        try:
            while data:
                try:
                    sent = sock.send(data)
                    data = data[sent:]
                except (BlockingIOError, InterruptedError):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    select.select([], [sock], [], left)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._drop(fd)

    def _drop(self, fd: int) -> None:
        client = self._clients.pop(fd)
        try:
            client.sock.close()
        except OSError:
            pass


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


PATHS = ("/live", "/ready", "/status", "/metrics")


def routes(
    facts: Callable[[], FleetSnapshot],
    metrics_text: Callable[[], str] | None = None,
) -> Responder:
    """The paths, answered from ``facts()`` and ``metrics_text()`` (read
    when asked)."""

    def respond(path: str) -> tuple[int, dict[str, Any] | str] | None:
        if path == "/metrics" and metrics_text is not None:
            if not metrics.available():
                return 404, metrics.HINT + "\n"
            return 200, metrics_text()
        if path not in PATHS[:3]:
            return None
        current = facts()
        if path == "/status":
            return 200, health.supervisor_report(current)
        verdict = (
            health.liveness(current) if path == "/live" else health.readiness(current)
        )
        return (200 if verdict.ok else 503), {
            "status": "ok" if verdict.ok else "fail",
            "reasons": list(verdict.reasons),
        }

    return respond


def open_for(
    config: Any,
    snapshot: Callable[[], FleetSnapshot],
    metrics_text: Callable[[], str] | None = None,
) -> ProbeServer | None:
    """The probe server serving what ``snapshot`` and ``metrics_text``
    return, bound before anything is forked; None without ``--health-port``.
    Raises ProbeBindError."""
    port = getattr(config, "health_port", None)
    if not port:
        return None
    return ProbeServer(config.health_host, port, routes(snapshot, metrics_text))
