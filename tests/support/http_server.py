"""A real HTTP(S) server on 127.0.0.1 for download tests, with faults you can switch on per path.

Serves files from a directory (a mirror laid out as INTERFACE.md says). Faults:
`status` (answer e.g. 500 or 404, `times` requests or forever), `drop_after` (send the
full Content-Length header, then only K bytes and close), `no_range` (ignore Range
headers and answer 200; `range_support = False` does so for every path), `redirect` (302 to a URL), `delay` (seconds per 64 KiB chunk),
`hide_length` (no Content-Length: the body ends when the connection closes, as a lying server may do).
Every request is recorded (method, path, Range header) so tests can assert a resume.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

CHUNK = 64 << 10


@dataclass
class Fault:
    status: int | None = None
    drop_after: int | None = None
    no_range: bool = False
    redirect: str | None = None
    delay: float = 0.0
    hide_length: bool = False
    times: int | None = None  # None: every request; N: the next N requests, then healthy again

    def consume(self) -> bool:
        if self.times is None:
            return True
        if self.times > 0:
            self.times -= 1
            return True
        return False


@dataclass
class Seen:
    method: str
    path: str
    range: str | None


@dataclass
class TLSFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path) -> TLSFiles:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = d / "ca.key", d / "ca.pem", d / "server.key", d / "server.csr", d / "server.pem"
    ext = d / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")

    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
         "-days", "2", "-subj", "/CN=nodeagent test CA")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ossl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
         "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return TLSFiles(ca, cert, key)


_SHARED_TLS: TLSFiles | None = None


def shared_tls() -> TLSFiles:
    """One throwaway CA and server certificate per test process, removed at exit.

    Mirror tests serve over https unless they test plain http: a plain http mirror is
    refused for anything no pin covers (INTERFACE.md "Pins").
    """
    global _SHARED_TLS
    if _SHARED_TLS is None:
        import atexit
        import shutil
        import tempfile

        d = tempfile.mkdtemp(prefix="nodeagent-tls-")
        atexit.register(shutil.rmtree, d, True)
        _SHARED_TLS = make_tls(Path(d))
    return _SHARED_TLS


class LoopbackServer:
    """`with LoopbackServer(mirror_dir) as srv: srv.url` — stop() makes the port refuse connections."""

    def __init__(self, root: str | os.PathLike, tls: TLSFiles | None = None):
        self.root = Path(root)
        self.tls = tls
        self.faults: dict[str, Fault] = {}
        self.range_support = True  # False: ignore every Range header and answer 200
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control -----------------------------------------------------------------------------
    def fault(self, path: str, **kwargs) -> Fault:
        f = Fault(**kwargs)
        self.faults["/" + path.lstrip("/")] = f
        return f

    def requests_for(self, path: str) -> list[Seen]:
        path = "/" + path.lstrip("/")
        return [s for s in self.seen if s.path == path]

    @property
    def url(self) -> str:
        """The base URL; still valid after stop() (then connections are refused)."""
        return self._url

    def start(self) -> "LoopbackServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_HEAD(self):
                self._serve(head=True)

            def do_GET(self):
                self._serve(head=False)

            def _serve(self, head: bool):
                path = unquote(urlparse(self.path).path)
                with server._lock:
                    server.seen.append(Seen(self.command, path, self.headers.get("Range")))
                    fault = server.faults.get(path)
                    active = fault is not None and fault.consume()
                if active and fault.redirect:
                    self.send_response(302)
                    self.send_header("Location", fault.redirect)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if active and fault.status:
                    self._plain(fault.status)
                    return
                file = (server.root / path.lstrip("/")).resolve()
                if not str(file).startswith(str(server.root.resolve()) + "/") or not file.is_file():
                    self._plain(404)
                    return
                size = file.stat().st_size
                start = 0
                rng = self.headers.get("Range")
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and server.range_support and not (active and fault.no_range):
                    start = int(m.group(1))
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                else:
                    self.send_response(200)
                if active and fault.hide_length:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(size - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if head:
                    return
                budget = fault.drop_after if active and fault.drop_after is not None else None
                with open(file, "rb") as fh:
                    fh.seek(start)
                    while True:
                        n = CHUNK if budget is None else min(CHUNK, budget)
                        block = fh.read(n) if n else b""
                        if not block:
                            break
                        self.wfile.write(block)
                        if budget is not None:
                            budget -= len(block)
                        if active and fault.delay:
                            time.sleep(fault.delay)
                if budget is not None:  # drop the connection mid-body
                    self.wfile.flush()
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

            def _plain(self, code: int):
                body = f"{code}\n".encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.tls.cert, self.tls.key)
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._url = f"{'https' if self.tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)
            self._httpd = None

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
