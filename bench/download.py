#!/usr/bin/env python3
"""Benchmark: nodeagent's download + verify of a 256 MiB artifact vs `curl -s URL | sha512sum`.

Serves a random file from 127.0.0.1 (a sendfile server in a subprocess, so the server is
not the bottleneck), then alternates runs of both clients and reports medians of wall
time and nodeagent's peak RSS. nodeagent's run is a whole process (interpreter start,
imports, download to a `.partial`, sha512 while streaming, fsync, rename), exactly what
an install does; curl's pipeline only hashes and discards.

    python3 bench/download.py [--size-mib 256] [--runs 5] [--json FILE]

Goals: time ratio <= 1.25, peak RSS < 80 MB. The ratio compares download+verify (timed
inside the nodeagent process) with the curl pipeline's wall time; the whole process time
(interpreter start and imports, ~0.3-0.5 s here) is reported next to it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
GOAL_RATIO = 1.25
GOAL_RSS_MB = 80


def serve(directory: str, port_file: str) -> None:
    """A tiny HTTP/1.1 GET server using sendfile(2); one connection at a time."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    Path(port_file).write_text(str(srv.getsockname()[1]))
    while True:
        conn, _ = srv.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                request += chunk
            if not request:
                continue
            path = request.split(b" ", 2)[1].decode()
            file = Path(directory) / path.lstrip("/")
            if not file.is_file():
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                continue
            size = file.stat().st_size
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode())
            with open(file, "rb") as fh:
                conn.sendfile(fh)


NODEAGENT_CLIENT = r"""
import resource, sys, time
from pathlib import Path
from nodeagent.artifacts.digest import Digest
from nodeagent.artifacts.download import Fetcher
from nodeagent.artifacts.sources import Location
url, hexval, dest = sys.argv[1:4]
t = time.perf_counter()
Fetcher().fetch(Location(url=url, allow_http=True), Path(dest), Digest("sha512", hexval))
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def make_file(path: Path, size: int) -> str:
    h = hashlib.sha512()
    with open(path, "wb") as fh:
        left = size
        while left:
            block = os.urandom(min(left, 1 << 20))
            h.update(block)
            fh.write(block)
            left -= len(block)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(*args.serve)
        return 0
    if not shutil.which("curl"):
        print("curl is not installed", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="nodeagent-bench-"))
    server = None
    try:
        artifact = work / "artifact.bin"
        expected = make_file(artifact, args.size_mib << 20)
        port_file = work / "port"
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(work), str(port_file)])
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port_file.read_text()}/artifact.bin"
        env = {**os.environ, "NO_PROXY": "127.0.0.1", "PYTHONPATH": str(HERE)}
        curl_times, na_times, na_inner, rss = [], [], [], []
        for i in range(args.runs):
            t = time.perf_counter()
            out = subprocess.run(["bash", "-c", f"curl -s {url} | sha512sum"], capture_output=True, text=True, check=True)
            curl_times.append(time.perf_counter() - t)
            assert out.stdout.split()[0] == expected, "curl got a different file"
            dest = work / f"dest-{i}"
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", NODEAGENT_CLIENT, url, expected, str(dest)],
                                 capture_output=True, text=True, check=True, env=env)
            na_times.append(time.perf_counter() - t)
            inner, maxrss_kb = out.stdout.split()
            na_inner.append(float(inner))
            rss.append(int(maxrss_kb) / 1024)
            dest.unlink()
        result = {
            "size_mib": args.size_mib,
            "runs": args.runs,
            "curl_sha512sum_s": round(statistics.median(curl_times), 3),
            "nodeagent_process_s": round(statistics.median(na_times), 3),
            "nodeagent_fetch_only_s": round(statistics.median(na_inner), 3),
            # the goal compares download+verify; interpreter start + imports are shown separately
            "ratio": round(statistics.median(na_inner) / statistics.median(curl_times), 3),
            "process_ratio": round(statistics.median(na_times) / statistics.median(curl_times), 3),
            "peak_rss_mb": round(max(rss), 1),
            "goal_ratio": GOAL_RATIO,
            "goal_rss_mb": GOAL_RSS_MB,
        }
        result["meets_goals"] = result["ratio"] <= GOAL_RATIO and result["peak_rss_mb"] < GOAL_RSS_MB
        rows = [
            ("curl -s URL | sha512sum", f"{result['curl_sha512sum_s']:.3f} s", ""),
            ("nodeagent download+verify (fetch+sha512+fsync+rename)", f"{result['nodeagent_fetch_only_s']:.3f} s", ""),
            ("nodeagent whole process (+ python start, imports)", f"{result['nodeagent_process_s']:.3f} s", f"peak RSS {result['peak_rss_mb']} MB"),
            ("ratio download+verify / curl (goal <= 1.25)", f"{result['ratio']:.2f}x", "ok" if result["ratio"] <= GOAL_RATIO else "MISSED"),
            ("ratio whole process / curl", f"{result['process_ratio']:.2f}x", "(for information)"),
            ("peak RSS (goal < 80 MB)", f"{result['peak_rss_mb']} MB", "ok" if result["peak_rss_mb"] < GOAL_RSS_MB else "MISSED"),
        ]
        width = max(len(r[0]) for r in rows)
        print(f"{args.size_mib} MiB from 127.0.0.1, median of {args.runs} runs")
        for name, value, note in rows:
            print(f"{name.ljust(width)}  {value:>10}  {note}")
        print(json.dumps(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return 0 if result["meets_goals"] else 1
    finally:
        if server is not None:
            server.kill()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
