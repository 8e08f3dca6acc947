"""Restarting containerd through a real systemd: live root, a DaemonSet-like pod (D-Bus private
socket, no hostPID), a hostPID pod (nsenter), and systemd's start limit.

Everything runs against the booted systemd node (tests/support/clean_node.py); nodeagent runs
inside the node (live root) or in a pod-like process next to it, exactly where it would on a node.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest

from nodeagent import service
from nodeagent.host import HostRoot

pytestmark = [pytest.mark.integration, pytest.mark.root]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs where nodeagent would run; prints the RestartResult (or the error) as JSON.
SNIPPET = textwrap.dedent("""
    import json, os, sys
    from nodeagent.errors import NodeagentError
    from nodeagent.host import HostRoot
    from nodeagent import service
    host = HostRoot(os.environ.get("NODEAGENT_ROOT", "/"))
    kind = os.environ.get("TRANSPORT")
    transport = None
    if kind == "nsenter":
        transport = service.SystemctlTransport(["nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "--"], name="nsenter")
    try:
        chosen = service.choose_transport(host).name
        if os.environ.get("UNIT"):
            r = service.restart_unit(transport or service.choose_transport(host), os.environ["UNIT"], timeout=20)
        else:
            r = service.restart_containerd(host, os.environ.get("FLAVOR", "containerd"), os.environ.get("MODE", "auto"),
                                           20, transport=transport)
        print(json.dumps({"chosen": chosen, "live": host.is_live, **r.as_dict()}))
    except NodeagentError as exc:
        print(json.dumps({"error": exc.message, "hint": exc.hint}))
""")


def _env(**extra) -> dict[str, str]:
    return {"PYTHONPATH": REPO, "NODEAGENT_LOG_FORMAT": "json", **extra}


def _in_node(node, **extra) -> dict:
    proc = node.run([sys.executable, "-c", SNIPPET], env=_env(**extra), timeout=60)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _in_pod(node, host_pid: bool = False, **extra) -> dict:
    proc = node.run_pod([sys.executable, "-c", SNIPPET], host_pid=host_pid, env=_env(**extra), timeout=60)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_restarted(node, result: dict, method: str, before: int) -> None:
    assert "error" not in result, result
    assert result["method"] == method and result["unit"] == "containerd.service"
    assert result["restarted"] and not result["pending"]
    assert result["old_pid"] == before != result["new_pid"] == node.main_pid()
    node.wait_active()


def test_live_root_restarts_with_systemctl(clean_node):
    before = clean_node.main_pid()
    result = _in_node(clean_node)
    assert result["live"] and result["chosen"] == "systemctl"
    _assert_restarted(clean_node, result, "systemctl", before)
    assert result["elapsed"] < 5


def test_daemonset_pod_without_host_pid_uses_systemd_private_socket(clean_node):
    """The least-privileged way: the node's /run under --root, uid 0, no hostPID, no nsenter."""
    before = clean_node.main_pid()
    result = _in_pod(clean_node, host_pid=False)
    assert not result["live"] and result["chosen"] == "dbus"
    _assert_restarted(clean_node, result, "dbus", before)


def test_host_pid_pod_can_also_nsenter_into_the_node(clean_node):
    before = clean_node.main_pid()
    result = _in_pod(clean_node, host_pid=True, TRANSPORT="nsenter")
    assert result["chosen"] == "dbus"  # still preferred when the socket is there
    _assert_restarted(clean_node, result, "nsenter", before)


def test_start_limit_hit_before_us_is_reset(clean_node):
    """A crash loop (here: back-to-back restarts) left containerd failed with start-limit-hit."""
    restarts = clean_node.hit_start_limit()
    assert restarts <= 6
    assert clean_node.unit_property("containerd.service", "ActiveState") == "failed"
    result = _in_pod(clean_node)
    assert "error" not in result, result
    assert result["restarted"] and result["start_limit_resets"] == 1 and result["old_pid"] is None
    assert result["new_pid"] == clean_node.main_pid()
    clean_node.wait_active()


def test_start_limit_hit_by_our_own_restart_is_reset_and_retried(clean_node):
    """A unit with StartLimitBurst=2: our restart is the 3rd start, systemd refuses it, we recover."""
    unit = "nodeagent-limit-test.service"
    clean_node.path(f"/etc/systemd/system/{unit}").write_text(textwrap.dedent("""
        [Unit]
        StartLimitIntervalSec=60
        StartLimitBurst=2
        [Service]
        ExecStart=/bin/sleep infinity
    """))
    try:
        clean_node.systemctl("daemon-reload")
        clean_node.systemctl("start", unit)
        clean_node.systemctl("restart", unit)  # 2 starts: the burst is used up
        before = clean_node.main_pid(unit)
        result = _in_pod(clean_node, UNIT=unit)
        assert "error" not in result, result
        assert result["restarted"] and result["attempts"] == 2 and result["start_limit_resets"] == 1
        assert result["old_pid"] == before != result["new_pid"] == clean_node.main_pid(unit)
    finally:
        clean_node.systemctl("stop", unit, check=False)
        clean_node.systemctl("reset-failed", unit, check=False)
        clean_node.path(f"/etc/systemd/system/{unit}").unlink()
        clean_node.systemctl("daemon-reload")


def test_unit_of_another_flavor_missing_on_the_node(clean_node):
    result = _in_pod(clean_node, FLAVOR="k3s")
    assert "none of the units k3s.service, k3s-agent.service exists" in result["error"]
    assert "--restart none" in result["hint"]


def test_restart_none_and_k0s_auto_touch_nothing(tmp_path):
    """No systemd needed: --restart none only reports; k0s reloads its drop-ins by itself."""
    host = HostRoot(tmp_path)
    pending = service.restart_containerd(host, "containerd", "none", 60)
    assert pending.pending and not pending.restarted and pending.method == "none" and pending.reason
    k0s = service.restart_containerd(host, "k0s", "auto", 60)
    assert not k0s.pending and not k0s.restarted and "k0s" in k0s.reason


def test_no_way_to_the_nodes_systemd_says_what_the_daemonset_needs(tmp_path):
    with pytest.raises(service.ServiceError) as err:
        service.choose_transport(HostRoot(tmp_path))
    assert "cannot reach the node's systemd" in err.value.message
    assert "hostPID" in err.value.hint and "/run/systemd/private" in err.value.hint


def test_live_root_without_systemd_is_refused():
    """This machine itself: PID 1 is not systemd here, so nothing may be restarted through it."""
    if os.path.isdir("/run/systemd/system"):
        assert service.choose_transport(HostRoot("/")).name == "systemctl"
    else:
        with pytest.raises(service.ServiceError, match="systemd is not running"):
            service.choose_transport(HostRoot("/"))


def test_dbus_marshalling_round_trip():
    """Our D-Bus encoder against our decoder, with the alignment cases systemd's replies use."""
    from nodeagent import sdbus

    data = sdbus.encode_call(7, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", "RestartUnit",
                             "ss", ("containerd.service", "replace"))
    msg_type, fields, body, used = sdbus.decode_message(data + b"trailing")
    assert (msg_type, used) == (sdbus.METHOD_CALL, len(data))
    assert fields[1] == "/org/freedesktop/systemd1" and fields[3] == "RestartUnit" and fields[8] == "ss"
    assert body == ["containerd.service", "replace"]
    w = sdbus._Writer()
    w.write("a{sv}", [("MainPID", ("u", 4242)), ("Names", ("as", ["a.service", "b"])), ("T", ("t", 2**40))])
    assert sdbus._Reader(bytes(w.buf)).read("a{sv}") == {"MainPID": 4242, "Names": ["a.service", "b"], "T": 2**40}
    assert sdbus._split("sa{sv}(us)ao") == ["s", "a{sv}", "(us)", "ao"]


def test_from_the_machine_hosting_the_node_we_enter_its_namespaces(clean_node):
    """Our test process is outside the node's PID namespace (above it): systemd would drop our
    D-Bus connection, so nodeagent finds systemd's PID through the socket and nsenters it."""
    host = HostRoot(clean_node.root)
    transport = service.choose_transport(host)
    assert transport.name == "nsenter" and str(clean_node.pid) in transport.prefix
    before = clean_node.main_pid()
    result = service.restart_containerd(host, "containerd", "systemd", 20)
    assert result.restarted and result.old_pid == before != result.new_pid == clean_node.main_pid()


def test_containerd_that_does_not_come_back_is_reported_within_the_timeout(clean_node):
    """Broken TOML: containerd exits at once and systemd retries it every 5 s (Restart=always):
    the restart must give up at our deadline with the unit's state, not hang."""
    import time

    from tests.support.systemd_node import NODE_CONTAINERD_CONFIG

    config = clean_node.path("/etc/containerd/config.toml")
    config.write_text("version = 2\n[plugins\n")
    try:
        transport = service.choose_transport(HostRoot(clean_node.root))
        start = time.monotonic()
        with pytest.raises(service.ServiceError) as err:
            service.restart_unit(transport, "containerd.service", timeout=2.5)
        took = time.monotonic() - start
        assert "did not come back after a restart within 2s" in err.value.message
        assert "journalctl -u containerd.service" in err.value.hint
        assert 2.0 < took < 8, took
    finally:
        config.write_text(NODE_CONTAINERD_CONFIG)
