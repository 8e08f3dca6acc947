"""A loopback HTTP/1.1 mirror using sendfile(2), in its own process so it is never the bottleneck.

    with MirrorServer(directory) as url: ...

Serves GET/HEAD for files under `directory`, one connection at a time, 404 for the rest.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path


def serve(directory: str, port_file: str) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    Path(port_file).write_text(str(srv.getsockname()[1]))
    root = Path(directory).resolve()
    while True:
        conn, _ = srv.accept()
        with conn:
            _answer(conn, root)


def _answer(conn: socket.socket, root: Path) -> None:
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = conn.recv(65536)
        if not chunk:
            return
        request += chunk
    method, path = request.split(b" ", 2)[:2]
    file = (root / path.decode().split("?")[0].lstrip("/")).resolve()
    if not file.is_file() or root not in file.parents:
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return
    size = file.stat().st_size
    conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode())
    if method == b"GET":
        with open(file, "rb") as fh:
            conn.sendfile(fh)


class MirrorServer:
    def __init__(self, directory: Path):
        self.directory = directory
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> str:
        port_file = self.directory.parent / f".port-{self.directory.name}"
        port_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, __file__, str(self.directory), str(port_file)])
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("the bench's mirror server did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{port_file.read_text()}"

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
