"""The real `nodeagent agent` keeps answering probes while idle clients hold connections (M2).

Security review M2: with a 256 fd limit, 256 idle TCP connections took every descriptor of the
agent (one thread and one fd each, no read timeout): /healthz timed out and the next converges
misdetected the host. Here the real agent converges a copy of a captured host tree (restart
none, the suite's directory mirror) under the same fd limit while 300 idle connections are open.
"""

from __future__ import annotations

import errno
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import prom
from tests.support.fake_apiserver import free_port
from tests.support.mirror import default_mirror
from tests.support.wait import wait_for

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/hosts/containerd-v2"
FD_LIMIT = 256
IDLE_CONNECTIONS = 300


def _get(port: int, path: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def _metric(port: int, name: str) -> float:
    """The sum over the metric's label sets (nodeagent_converges_total has an outcome label)."""
    return prom.total(prom.parse(_get(port, "/metrics")[1]), name)


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


@pytest.fixture
def agent(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(FIXTURE, root, symlinks=True)
    for leftover in (root / "usr/local/bin").iterdir():  # the capture's own runsc: not ours to replace
        leftover.unlink()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODEAGENT_")}
    env.update(NODEAGENT_MIRROR=str(default_mirror()), NODEAGENT_LOG_FORMAT="json")
    argv = [sys.executable, "-m", "nodeagent", "--root", str(root), "agent", "--runtime", "gvisor",
            "--restart", "none", "--interval", "1", "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(argv, env=env, preexec_fn=_limit_fds, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _get(port, "/readyz", timeout=2)[0] == 200, 60, "the agent's first converge",
                 detail=lambda: proc.stderr.read() if proc.poll() is not None else "")
        yield proc, port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _open_idle(port: int, count: int) -> list[socket.socket]:
    """`count` connections that never send a byte. Paced (10 ms apart) so the server gets to accept
    each one: a burst overflows a small accept queue and the kernel drops most before the server
    sees them. Non-blocking connects: a full backlog must not stall the test itself."""
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", port))
        assert err in (0, errno.EINPROGRESS), os.strerror(err)
        socks.append(s)
        time.sleep(0.01)
    return socks


def _wait_connected(socks: list[socket.socket], timeout: float) -> int:
    """Wait until every connect completed (SYNs a full backlog dropped are retried by the kernel
    after 1, 3, 7 s...) or `timeout` passed; returns how many completed."""
    pending, deadline = list(socks), time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        _, writable, _ = select.select([], pending, [], 0.5)
        pending = [s for s in pending if s not in writable]
    return len(socks) - len(pending)


def _closed_by_server(sock: socket.socket) -> bool:
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except BlockingIOError:
        return False
    except OSError as exc:  # e.g. a connect the backlog never completed
        return exc.errno in (errno.ECONNREFUSED, errno.ENOTCONN)


@pytest.mark.integration
def test_healthz_answers_under_300_idle_connections_and_they_are_dropped(agent):
    proc, port = agent
    converges = _metric(port, "nodeagent_converges_total")
    idle = _open_idle(port, IDLE_CONNECTIONS)
    try:
        _wait_connected(idle, 20)
        status, body = _get(port, "/healthz", timeout=10)
        assert (status, body) == (200, "ok\n"), body
        # the agent's converges go on under the same fd limit: it can still read the host
        wait_for(lambda: _metric(port, "nodeagent_converges_total") >= converges + 2, 60,
                 "two more converges while the idle connections are open")
        assert _get(port, "/readyz")[0] == 200, _get(port, "/readyz")[1]
        assert _metric(port, "nodeagent_converge_failures_total") == 0
        # slow clients are timed out: the server closes every idle connection by itself
        pending = list(idle)
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            pending = [s for s in pending if not _closed_by_server(s)]
            time.sleep(0.2)
        assert not pending, f"{len(pending)} of {IDLE_CONNECTIONS} idle connections still open after 60 s"
    finally:
        for s in idle:
            s.close()
    assert proc.poll() is None


@pytest.mark.integration
def test_a_slow_request_is_cut_off_and_a_garbled_one_refused(agent):
    _, port = agent
    with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
        slow.sendall(b"GET /healthz HT")  # and never the rest
        assert slow.recv(100) == b""  # closed by the server without an answer (else: socket.timeout)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as bad:
        bad.sendall(b"garbage\r\n\r\n")
        assert bad.recv(100).startswith(b"HTTP/1.0 400")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as post:
        post.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert post.recv(100).startswith(b"HTTP/1.0 405")


@pytest.mark.integration
def test_metrics_scraped_and_parsed_like_prometheus(agent):
    """The running agent's /metrics through prometheus_client's own text parser: standard names
    and units, the process metrics of the agent's own PID, a histogram with as many observations
    as converges counted by outcome."""
    import psutil

    from nodeagent.metrics import CONVERGE_BUCKETS, OUTCOMES

    proc, port = agent
    wait_for(lambda: _metric(port, "nodeagent_converges_total") >= 2, 60, "a second converge")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        content_type, text = r.headers["Content-Type"], r.read().decode()
    assert content_type.startswith("text/plain; version=0.0.4")
    samples, kinds = prom.parse(text), prom.types(text)
    for family, kind in {"process_resident_memory_bytes": "gauge", "process_cpu_seconds": "counter",
                         "process_open_fds": "gauge", "process_start_time_seconds": "gauge",
                         "nodeagent_converges": "counter", "nodeagent_converge_duration_seconds": "histogram",
                         "nodeagent_containerd_restarts": "counter", "nodeagent_ready": "gauge"}.items():
        assert kinds.get(family) == kind, (family, kinds.get(family))
    me = psutil.Process(proc.pid)
    rss = prom.value(samples, "process_resident_memory_bytes")
    assert 0.5 < rss / me.memory_info().rss < 2  # the agent's own RSS, in bytes (not kB, not a child's)
    assert abs(prom.value(samples, "process_start_time_seconds") - me.create_time()) < 2
    assert 0 < prom.value(samples, "process_open_fds") <= 256  # under the fixture's fd limit
    assert prom.value(samples, "process_cpu_seconds_total") > 0
    # converges by outcome: every outcome exported, the same count as the histogram's observations
    assert {s.labels["outcome"] for s in samples["nodeagent_converges_total"]} == set(OUTCOMES)
    converges = prom.total(samples, "nodeagent_converges_total")
    assert prom.value(samples, "nodeagent_converges_total", outcome="changed") == 1  # the first install
    assert prom.value(samples, "nodeagent_converges_total", outcome="unchanged") == converges - 1
    buckets = [(s.labels["le"], s.value) for s in samples["nodeagent_converge_duration_seconds_bucket"]]
    assert [float(le) for le, _ in buckets[:-1]] == list(CONVERGE_BUCKETS) and buckets[-1][0] == "+Inf"
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and counts[-1] == prom.value(samples, "nodeagent_converge_duration_seconds_count")
    assert prom.value(samples, "nodeagent_converge_duration_seconds_count") >= converges  # scraped after, may be 1 more
    assert prom.value(samples, "nodeagent_converge_duration_seconds_sum") > 0
    assert prom.value(samples, "nodeagent_ready") == 1
    assert not any(name.endswith("_created") for name in samples)
