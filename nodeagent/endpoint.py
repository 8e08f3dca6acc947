"""A tiny HTTP/1.0 server for /healthz, /readyz and /metrics that idle clients cannot starve.

The standard library's ThreadingHTTPServer spends a thread and a file descriptor per connection
and waits forever for a request line, so a few hundred idle connections took every descriptor of
the agent: probes timed out and the next converge could not read the host (security review M2).
Here one thread multiplexes every connection with a selector; a connection has `timeout` seconds
to send its request, at most `max_connections` are open at once (a new one evicts the oldest that
has not finished its request), and answers are computed in memory and written at once.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

# (status, body, content type) for a request path
Route = Callable[[str], tuple[int, str, str]]

MAX_CONNECTIONS = 64
REQUEST_TIMEOUT = 5.0
MAX_REQUEST_BYTES = 8192
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


@dataclass
class _Conn:
    sock: socket.socket
    deadline: float
    data: bytearray = field(default_factory=bytearray)


def _response(code: int, body: str, ctype: str, head_only: bool = False) -> bytes:
    payload = body.encode()
    header = (f"HTTP/1.0 {code} {_REASONS.get(code, 'Error')}\r\nContent-Type: {ctype}\r\n"
              f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n")
    return header.encode("latin-1") + (b"" if head_only else payload)


class BoundedHTTPServer:
    """Serve `route` on (host, port) from one thread; see the module docstring for the bounds."""

    def __init__(self, address: tuple[str, int], route: Route, *, max_connections: int = MAX_CONNECTIONS,
                 timeout: float = REQUEST_TIMEOUT):
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(address)
            self.listener.listen(128)
        except OSError:
            self.listener.close()
            raise
        self.listener.setblocking(False)
        self.server_address = self.listener.getsockname()
        self.route = route
        self.max_connections = max_connections
        self.timeout = timeout
        self.conns: dict[int, _Conn] = {}  # by fd, in accept order (dicts keep insertion order)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._running = threading.Lock()

    # --- loop -----------------------------------------------------------------
    def serve_forever(self) -> None:
        with self._running:
            while not self._stop.is_set():
                for key, _ in self.selector.select(timeout=0.5):
                    if key.fileobj is self.listener:
                        self._accept()
                    else:
                        self._read(key.fd)
                self._expire(time.monotonic())

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EMFILE/ENFILE: leave the client in the backlog, try again on the next tick
            time.sleep(0.05)
            return
        if len(self.conns) >= self.max_connections:
            self._close(next(iter(self.conns)))  # the oldest connection that is still waiting
        sock.setblocking(False)
        self.conns[sock.fileno()] = _Conn(sock, time.monotonic() + self.timeout)
        self.selector.register(sock, selectors.EVENT_READ)

    def _read(self, fd: int) -> None:
        conn = self.conns.get(fd)
        if conn is None:
            return
        try:
            chunk = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(fd)
            return
        conn.data += chunk
        end = conn.data.find(b"\r\n\r\n")
        if end < 0:
            end = conn.data.find(b"\n\n")
        if end >= 0:
            self._answer(fd, bytes(conn.data[:end]))
        elif len(conn.data) > MAX_REQUEST_BYTES:
            self._answer(fd, b"")

    def _answer(self, fd: int, head: bytes) -> None:
        conn = self.conns[fd]
        request_line = head.split(b"\n", 1)[0].decode("latin-1").strip().split()
        if len(request_line) != 3 or not request_line[2].startswith("HTTP/"):
            data = _response(400, "bad request\n", "text/plain")
        elif request_line[0] not in ("GET", "HEAD"):
            data = _response(405, "method not allowed\n", "text/plain")
        else:
            code, body, ctype = self.route(request_line[1].split("?", 1)[0])
            data = _response(code, body, ctype, head_only=request_line[0] == "HEAD")
        try:
            # answers are small: they fit the socket's send buffer, so this does not block
            conn.sock.setblocking(True)
            conn.sock.settimeout(1.0)
            conn.sock.sendall(data)
        except OSError:
            pass
        self._close(fd)

    def _expire(self, now: float) -> None:
        for fd in [fd for fd, conn in self.conns.items() if conn.deadline <= now]:
            self._close(fd)

    def _close(self, fd: int) -> None:
        conn = self.conns.pop(fd, None)
        if conn is None:
            return
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    # --- the socketserver-like API the agent uses --------------------------------
    def shutdown(self) -> None:
        """Stop serve_forever (called from another thread) and wait for it."""
        self._stop.set()
        if self._running.acquire(timeout=5):  # free at once when serve_forever never ran
            self._running.release()

    def server_close(self) -> None:
        for fd in list(self.conns):
            self._close(fd)
        self.selector.close()
        self.listener.close()
