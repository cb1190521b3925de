"""A TCP relay to PostgreSQL that the tests can turn into a black hole."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit


class BlackHole:
    """A TCP relay to PostgreSQL that can stop relaying: from then on it
    neither forwards nor answers, on old connections and new ones alike (a
    lost network path, as far as the client can tell)."""

    def __init__(self, host: str, port: int):
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.swallowing = threading.Event()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(client)
            if self.swallowing.is_set():
                continue  # accepted by the kernel, never answered
            try:
                server = socket.create_connection(self.upstream)
            except OSError:  # PostgreSQL down (restarted): refused, as direct
                client.close()
                continue
            self.sockets.append(server)
            threading.Thread(
                target=self._relay, args=(client, server), daemon=True
            ).start()

    def _relay(self, a: socket.socket, b: socket.socket) -> None:
        peer = {a: b, b: a}
        try:
            while not self.closed.is_set():
                if self.swallowing.is_set():
                    time.sleep(0.1)  # keep both ends open, move nothing
                    continue
                readable, _, _ = select.select([a, b], [], [], 0.1)
                if self.swallowing.is_set():
                    continue  # set while it waited: nothing more moves
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peer[sock].sendall(data)
        except (OSError, ValueError):  # ValueError: closed by cut()
            return
        finally:
            # one end closed (PostgreSQL restarted, the client left): the
            # other must see it, as it would on a direct connection
            a.close()
            b.close()

    def cut(self) -> None:
        """End every connection relayed so far, both ends at once (the client
        sees its connection closed, as when the path or the server goes away);
        new connections are relayed as before."""
        relayed, self.sockets[1:] = self.sockets[1:], []
        for sock in relayed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.closed.set()
        for sock in self.sockets:
            sock.close()

    def url(self, db_url: str) -> str:
        """``db_url`` through this relay."""
        parts = urlsplit(db_url)
        netloc = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
        return urlunsplit(parts._replace(netloc=f"{netloc}:{self.port}"))

    @classmethod
    def to(cls, db_url: str) -> BlackHole:
        parts = urlsplit(db_url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5432)
