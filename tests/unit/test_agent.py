"""The agent loop: readiness, back-off, drift counting, endpoints, sd_notify, stop.

The converge step is injected here (a plain function that fails, then succeeds, then
changes something) so the loop's own logic is what is tested; the real converge runs
against a systemd node in tests/integration.
"""

import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from nodeagent import agent as agent_mod
from nodeagent.agent import Agent, ConvergeOutcome, parse_listen
from nodeagent.errors import NodeagentError, UsageError
from tests.support import prom
from tests.support.wait import wait_for


def _get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def test_loop_backs_off_then_becomes_ready_and_counts_drift(notify_socket, monkeypatch):
    monkeypatch.setattr(agent_mod, "FIRST_BACKOFF", 0.05)
    calls = []
    gate = threading.Event()

    def converge():
        calls.append(time.monotonic())
        n = len(calls)
        if n == 1:
            exc = NodeagentError("containerd unhealthy, rolled back", "see logs")
            exc.rolled_back = True
            raise exc
        if n == 2:
            return ConvergeOutcome(changed=True, restarted=True)
        if n == 3:
            return ConvergeOutcome(changed=True, restarted=True)  # drift repaired
        gate.set()
        return ConvergeOutcome()

    a = Agent(converge, interval=0.2, listen="127.0.0.1:0")
    port = a.start_server()[1]
    t = threading.Thread(target=a.run)
    t.start()
    try:
        first = notify_socket.recv(4096).decode()
        assert first.startswith("READY=1") and "failed" in first
        assert _get(port, "/healthz")[0] == 200
        wait_for(gate.is_set, 10, "the fourth converge")
        assert _get(port, "/readyz")[0] == 200
        m = prom.parse(_get(port, "/metrics")[1])
        assert prom.value(m, "nodeagent_converge_failures_total") == 1
        assert prom.value(m, "nodeagent_rollbacks_total") == 1
        assert prom.value(m, "nodeagent_installs_total") == 2
        assert prom.value(m, "nodeagent_drift_repairs_total") == 1
        assert prom.value(m, "nodeagent_containerd_restarts_total") == 2
        assert prom.value(m, "nodeagent_ready") == 1
        assert prom.value(m, "nodeagent_converges_total", outcome="rolled_back") == 1
        assert prom.value(m, "nodeagent_converges_total", outcome="changed") == 2
        assert prom.value(m, "nodeagent_converges_total", outcome="failed") == 0
        assert prom.value(m, "nodeagent_converge_duration_seconds_count") == prom.total(m, "nodeagent_converges_total")
        assert _get(port, "/nope")[0] == 404
    finally:
        a.request_stop()
        t.join(10)
    assert not t.is_alive()
    # the failed first converge was retried after the short back-off, not after the interval
    assert calls[1] - calls[0] < 0.2


def test_not_ready_until_a_converge_succeeds():
    def converge():
        raise NodeagentError("no containerd", "install containerd")

    a = Agent(converge, interval=30, listen="127.0.0.1:0")
    port = a.start_server()[1]
    a.converge_once()
    status, body = _get(port, "/readyz")
    assert status == 503 and "no containerd" in body
    a.server.shutdown()


def test_ready_gauge_drops_to_0_when_a_converge_fails_after_one_succeeded():
    results = [ConvergeOutcome(), NodeagentError("containerd gone", "start it"), RuntimeError("a bug")]

    def converge():
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    a = Agent(converge, interval=30, listen="127.0.0.1:0")
    assert a.converge_once() and a.metrics.get("nodeagent_ready") == 1
    assert not a.converge_once() and a.metrics.get("nodeagent_ready") == 0
    assert not a.converge_once()  # a crash counts as failed too
    assert a.metrics.get("nodeagent_converges_total", outcome="failed") == 2
    assert a.metrics.get("nodeagent_converges_total", outcome="unchanged") == 1
    assert a.metrics.get("nodeagent_converge_failures_total") == 2


def test_stop_uninstalls_only_when_asked():
    done = []
    for selected in (True, False):
        a = Agent(lambda: ConvergeOutcome(), interval=30, listen="127.0.0.1:0",
                  should_uninstall=lambda s=selected: not s, uninstall=lambda: done.append(1))
        t = threading.Thread(target=a.run)
        t.start()
        wait_for(lambda: a.ready, 10, "the agent to become ready")
        a.request_stop()
        t.join(10)
    assert done == [1]


def test_once_returns_exit_code():
    assert Agent(lambda: ConvergeOutcome(), interval=1, listen="127.0.0.1:0").run(once=True) == 0
    def bad():
        raise NodeagentError("x", "y")
    assert Agent(bad, interval=1, listen="127.0.0.1:0").run(once=True) == 2


def test_parse_listen():
    assert parse_listen("0.0.0.0:9101") == ("0.0.0.0", 9101)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("9101", "host:", "h:99999"):
        with pytest.raises(UsageError):
            parse_listen(bad)


def test_agent_once_with_the_lock_held_is_exit_3_with_error_and_hint(tmp_path):
    from nodeagent.fsutil import RunLock
    from tests.conftest import CORPUS
    from tests.support.cli import assert_known_error, run_cli
    from tests.support.tree import diff_snapshots, snapshot

    root = tmp_path / "root"
    (root / "etc/containerd").mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_bytes((CORPUS / "kind-node-v2.toml").read_bytes())
    with RunLock(root / "run/nodeagent.lock"):
        before = snapshot(root)
        proc = run_cli("--root", str(root), "agent", "--once", "--runtime", "gvisor", "--skip-eligibility")
        assert "another nodeagent holds" in assert_known_error(proc, 3)
        assert diff_snapshots(before, snapshot(root)) == []
