"""endpoint: the agent's /healthz, /readyz and /metrics server, which idle or hostile clients cannot
starve. Real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest

from nodeagent.endpoint import MAX_REQUEST_BYTES, BoundedHTTPServer
from tests.support.wait import wait_for


def _get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@contextmanager
def serving(**bounds):
    server = BoundedHTTPServer(("127.0.0.1", 0), lambda path: (200 if path == "/healthz" else 404, f"{path}\n",
                                                              "text/plain"), **bounds)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        out = b""
        while chunk := sock.recv(4096):
            out += chunk
        return out


def test_routes_answer_and_the_query_string_is_not_part_of_the_path():
    with serving() as (_, port):
        assert _get(port, "/healthz?verbose=1") == (200, "/healthz\n")
        assert _get(port, "/nope")[0] == 404


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /healthz HTTP/1.1\r\n\r\n", b"405"),
    (b"GET /healthz\r\n\r\n", b"400"),  # HTTP/0.9: no version
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n", b"400"),  # a TLS hello on the plain port
    (b"GET /" + b"a" * (MAX_REQUEST_BYTES + 100), b"400"),  # no end of headers in sight
])
def test_bad_requests_get_a_status_not_a_hang(request_bytes, status):
    with serving() as (_, port):
        answer = raw(port, request_bytes)
        assert answer.split(b" ")[1] == status and b"Connection: close" in answer


def test_head_gets_the_headers_without_the_body():
    with serving() as (_, port):
        answer = raw(port, b"HEAD /healthz HTTP/1.0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.0 200 OK\r\n") and b"Content-Length: 9\r\n" in answer
        assert answer.endswith(b"\r\n\r\n")


def test_a_client_that_never_finishes_its_request_is_dropped_after_the_timeout():
    with serving(timeout=0.5) as (server, port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"GET /healthz HTTP/1.0\r\n")  # and nothing more
            assert slow.recv(1) == b""  # the server hung up on it
        wait_for(lambda: not server.conns, 10, "the server to forget the connection")


def test_endpoint_keeps_at_most_max_connections_and_still_answers():
    """Idle clients beyond the bound evict the oldest idle one; a real request is still served."""
    server = BoundedHTTPServer(("127.0.0.1", 0), lambda path: (200, f"{path}\n", "text/plain"),
                               max_connections=4, timeout=30)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(10)]
    try:
        assert _get(port, "/x") == (200, "/x\n")
        wait_for(lambda: len(server.conns) <= 4, 10, "the server to evict idle connections")
        # the evicted ones were closed by the server: the oldest see EOF
        assert idle[0].recv(1) == b""
    finally:
        for s in idle:
            s.close()
        server.shutdown()
        server.server_close()
