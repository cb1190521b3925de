"""``/live`` from a process of its own, so that it answers whatever the
database does.

The supervisor's loop is single-threaded and some of its steps wait on the
database for a bounded time (a call on a backend that stopped answering:
``db.Timeouts.call``, 6 s by default). A probe served only by that loop would
time out meanwhile, and a kubelet restarts the pod for a fault a restart
cannot fix. So a tiny helper, forked at start before any database session,
holds the probe port: it answers ``/live`` itself, from what the loop
publishes in shared memory (``Beacon``), and hands every other request, with
its client socket, to the supervisor (``SCM_RIGHTS`` over a socket pair),
whose loop answers it as before.

``/live`` fails when the loop's last sign of progress is older than
``stall_bound``: its longest bounded step (one database call) plus
``LIVE_SLACK``. The loop signs at each turn and before each database call.
The helper has no thread, no database session and no log; it exits when the
supervisor closes its end of the pair or is gone (its parent changes).
"""

from __future__ import annotations

import gc
import json
import mmap
import os
import select
import signal
import socket
import struct
import time
from typing import Any

import setproctitle

from ..supervisor import signals
from . import probe

#: beyond the longest bounded step, for a loaded machine (forks, a slow turn)
LIVE_SLACK = 5.0
POLL = 0.5  # the helper's longest sleep: how soon it sees its parent gone
_HEAD = struct.Struct("=Qd??H")  # sequence, last progress, started, ok, length
_SIZE = 4096
_READ_TRIES = 1000


def stall_bound(call_timeout: float) -> float:
    """Seconds without a sign of progress after which ``/live`` fails."""
    return call_timeout + LIVE_SLACK


class Beacon:
    """What the loop tells the helper: a seqlock over one shared page (one
    writer, the supervisor; readers retry while it writes)."""

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, _SIZE)
        self._seq = 0
        self._fields: tuple[bool, bool, bytes] = (False, True, b"[]")
        self.touch()

    def touch(self) -> None:
        """A sign of progress, now."""
        self._write(*self._fields)

    def publish(self, ok: bool, reasons: list[str]) -> None:
        """The loop's own verdict (``health.liveness``); also a touch."""
        body = json.dumps(reasons).encode()[: _SIZE - _HEAD.size]
        self._fields = (True, ok, body)
        self._write(*self._fields)

    def _write(self, started: bool, ok: bool, body: bytes) -> None:
        self._seq += 1  # odd: being written
        _HEAD.pack_into(self._mem, 0, self._seq, time.monotonic(), started, ok, 0)
        self._mem[_HEAD.size : _HEAD.size + len(body)] = body
        self._seq += 1
        _HEAD.pack_into(
            self._mem, 0, self._seq, time.monotonic(), started, ok, len(body)
        )

    def read(self) -> tuple[float, bool, bool, list[str]]:
        """(last progress, started, ok, reasons)."""
        for _ in range(_READ_TRIES):
            seq, last, started, ok, length = _HEAD.unpack_from(self._mem, 0)
            body = self._mem[_HEAD.size : _HEAD.size + length]
            if seq % 2 == 0 and _HEAD.unpack_from(self._mem, 0)[0] == seq:
                return last, started, ok, json.loads(body) if length else []
        # The writer stopped in the middle (SIGSTOP): its time, already
        # written, is all there is; the bound judges it.
        return last, started, True, []


def verdict(beacon: Beacon, bound: float, now: float) -> tuple[int, dict[str, Any]]:
    last, started, ok, reasons = beacon.read()
    if now - last > bound:
        ok = False
        reasons = [f"supervisor loop stalled for {now - last:.0f} s"]
    elif not started:
        ok, reasons = True, []  # starting: the startup probe's business
    return (200 if ok else 503), {"status": "ok" if ok else "fail", "reasons": reasons}


class _Forwarding(probe.ProbeServer):
    """The helper's server: ``/live`` here, anything else to the supervisor."""

    outbox: socket.socket

    def _serve(self, fd: int) -> None:
        head = self._clients[fd].data.split(b"\n", 1)[0].split(b" ")
        path = head[1].split(b"?", 1)[0] if len(head) == 3 else b""
        if head[0] in (b"GET", b"HEAD") and path == b"/live":
            super()._serve(fd)
            return
        client = self._clients.pop(fd)
        try:
            socket.send_fds(self.outbox, [client.data], [fd])
        except OSError:  # the supervisor is behind by a full buffer
            self._clients[fd] = client
            self._answer(fd, 503, {"error": "supervisor busy"})
            return
        client.sock.close()


class LiveProbe:
    """The supervisor's handle on its helper."""

    def __init__(self, server: probe.ProbeServer, bound: float):
        self.server = server
        self.bound = bound
        self.beacon = Beacon()
        self.pid: int | None = None

    def start(self) -> None:
        """Fork the helper. Raises OSError."""
        inbox, outbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
        except OSError:
            inbox.close()
            outbox.close()
            raise
        if pid == 0:
            code = 1
            try:
                inbox.close()
                self._serve_forever(outbox)
                code = 0
            finally:
                os._exit(code)
        outbox.close()
        inbox.setblocking(False)
        self.server.take_clients_from(inbox)
        self.pid = pid

    def stop(self) -> None:
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        self.server.take_clients_from(None)
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass

    def _serve_forever(self, outbox: socket.socket) -> None:
        # What the supervisor held (sessions, sockets) is never finalized
        # here: its descriptors are closed below and their numbers reused.
        gc.freeze()
        parent = os.getppid()
        signal.set_wakeup_fd(-1)
        for signum in signals.HANDLED:  # the supervisor's, and its group's
            if signum != signal.SIGCHLD:
                signal.signal(signum, signal.SIG_IGN)
        keep = sorted({self.server.fileno(), outbox.fileno(), 0, 1, 2})
        for low, high in zip(keep, [*keep[1:], os.sysconf("SC_OPEN_MAX")], strict=True):
            os.closerange(low + 1, high)  # sessions, pipes, children's fds
        setproctitle.setproctitle(f"procrastinate-prefork probe (of {parent})")
        server = _Forwarding(None, 0, self._respond, sock=self.server.sock)
        outbox.setblocking(False)  # a supervisor far behind must not stop /live
        server.outbox = outbox
        while os.getppid() == parent:
            fds = [*server.filenos(), outbox.fileno()]
            readable, _, _ = select.select(fds, [], [], POLL)
            if outbox.fileno() in readable:
                return  # the supervisor closed its end: it is stopping
            server.handle(readable)

    def _respond(self, path: str) -> tuple[int, dict[str, Any]] | None:
        return verdict(self.beacon, self.bound, time.monotonic())
