"""service: picking the flavor's unit, restarting it through systemd's start limit, and choosing the
way to the node's systemd. Booted systemd (and real restarts) are tests/integration/test_service.py
and test_systemd_node.py's job.

`ScriptedSystemd` is a STAND-IN for systemd behind service.Transport (the seam the module takes
as a parameter): it plays a unit's states in order, so start-limit resets, refusals and timeouts can
be driven exactly. choose_transport runs against real sockets served by real processes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from nodeagent import service
from nodeagent.errors import CommandFailed
from nodeagent.host import HostRoot
from nodeagent.service import RestartResult, ServiceError, UnitState

ACTIVE = dict(load_state="loaded", active_state="active", sub_state="running", result="success")


def unit(pid: int = 0, **fields) -> UnitState:
    return UnitState(**{**ACTIVE, "main_pid": pid, **fields})


class ScriptedSystemd:
    """Unit states played in order per unit (the last one repeats); restart() may raise a scripted error."""

    name = "scripted"

    def __init__(self, states: dict[str, list[UnitState]], restart_errors: list[Exception | None] = ()):
        self.states = {u: list(s) for u, s in states.items()}
        self.restart_errors = list(restart_errors)
        self.calls: list[tuple[str, str]] = []

    def state(self, name: str) -> UnitState:
        queue = self.states.get(name) or [UnitState(load_state="not-found", active_state="inactive")]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def restart(self, name: str) -> None:
        self.calls.append(("restart", name))
        error = self.restart_errors.pop(0) if self.restart_errors else None
        if error:
            raise error

    def reset_failed(self, name: str) -> None:
        self.calls.append(("reset-failed", name))


@pytest.mark.parametrize(("states", "picked"), [
    ({"k3s.service": [unit(unit_file_state="enabled")], "k3s-agent.service": [unit(active_state="activating")]},
     "k3s.service"),
    ({"k3s.service": [unit(active_state="inactive", unit_file_state="disabled")],
      "k3s-agent.service": [unit(active_state="activating")]}, "k3s-agent.service"),
    ({"k3s.service": [unit(active_state="inactive", unit_file_state="disabled")],
      "k3s-agent.service": [unit(active_state="failed", unit_file_state="enabled")]}, "k3s-agent.service"),
    ({"k3s.service": [unit(active_state="inactive", unit_file_state="disabled")]}, "k3s.service"),
])
def test_the_active_unit_wins_then_the_enabled_then_the_loaded(states, picked):
    assert service.pick_unit(ScriptedSystemd(states), "k3s") == picked


def test_no_unit_for_an_unknown_flavor_or_when_none_exists():
    with pytest.raises(ServiceError, match="no systemd unit known for containerd flavor 'podman'"):
        service.pick_unit(ScriptedSystemd({}), "podman")
    with pytest.raises(ServiceError, match="none of the units rke2-server.service, rke2-agent.service exists"):
        service.pick_unit(ScriptedSystemd({}), "rke2")


def test_a_restart_waits_for_a_new_main_pid():
    systemd = ScriptedSystemd({"containerd.service": [
        unit(100), unit(100), unit(0, active_state="activating"), unit(200)]})
    result = service.restart_unit(systemd, "containerd.service", timeout=10)
    assert (result.old_pid, result.new_pid, result.restarted, result.attempts) == (100, 200, True, 1)
    assert result.method == "scripted" and systemd.calls == [("restart", "containerd.service")]


def test_a_failed_unit_is_reset_first_and_a_used_up_start_limit_counts():
    systemd = ScriptedSystemd({"containerd.service": [
        unit(0, active_state="failed", result="start-limit-hit"), unit(300)]})
    result = service.restart_unit(systemd, "containerd.service", timeout=10)
    assert systemd.calls == [("reset-failed", "containerd.service"), ("restart", "containerd.service")]
    assert result.start_limit_resets == 1 and result.old_pid is None and result.new_pid == 300


def test_the_start_limit_is_reset_and_the_restart_tried_again():
    hit = unit(0, active_state="failed", sub_state="failed", result="start-limit-hit")
    # the 1st restart ends in start-limit-hit; systemctl refuses the 2nd outright; the 3rd works
    refused = CommandFailed(["systemctl", "restart", "x"], 1, "Start request repeated too quickly.")
    systemd = ScriptedSystemd({"containerd.service": [unit(100), hit, hit, unit(400)]},
                              restart_errors=[None, refused])
    result = service.restart_unit(systemd, "containerd.service", timeout=10, backoff=0.01)
    assert result.restarted and result.new_pid == 400
    assert result.attempts == 3 and result.start_limit_resets == 2
    assert [c for c, _ in systemd.calls] == ["restart", "reset-failed", "restart", "reset-failed", "restart"]


def test_resets_are_bounded_and_the_failure_says_what_systemd_reported():
    hit = unit(0, active_state="failed", sub_state="failed", result="start-limit-hit")
    systemd = ScriptedSystemd({"containerd.service": [unit(100), hit]})
    with pytest.raises(ServiceError) as err:
        service.restart_unit(systemd, "containerd.service", timeout=10, max_start_limit_resets=2, backoff=0.01)
    assert err.value.message == ("containerd.service did not come back after a restart within 10s "
                                 "(failed/failed, result start-limit-hit)")
    assert "journalctl -u containerd.service" in err.value.hint
    assert [c for c, _ in systemd.calls].count("restart") == 3


def test_a_unit_that_keeps_its_old_pid_times_out():
    systemd = ScriptedSystemd({"containerd.service": [unit(100, result="")]})
    with pytest.raises(ServiceError, match=r"within 0s \(active/running\)$"):
        service.restart_unit(systemd, "containerd.service", timeout=0.2)


def test_a_refused_restart_other_than_the_start_limit_is_an_error():
    systemd = ScriptedSystemd({"containerd.service": [unit(100)]},
                              restart_errors=[CommandFailed(["systemctl", "restart"], 1, "Access denied")])
    with pytest.raises(ServiceError, match="restarting containerd.service failed: .*Access denied"):
        service.restart_unit(systemd, "containerd.service", timeout=5)


@pytest.mark.parametrize("load_state", ["not-found", "masked", ""])
def test_a_unit_that_is_not_loaded_is_never_restarted(load_state):
    systemd = ScriptedSystemd({"containerd.service": [UnitState(load_state=load_state)]})
    with pytest.raises(ServiceError, match=f"unit containerd.service is {load_state or 'unknown'} on this node"):
        service.restart_unit(systemd, "containerd.service")
    assert systemd.calls == []


def test_restart_modes(tmp_path):
    host = HostRoot(tmp_path)  # no systemd reachable under it: any attempt to find one would raise
    none = service.restart_containerd(host, "containerd", "none", 5)
    assert none.pending and none.method == "none" and "--restart none" in none.reason
    k0s = service.restart_containerd(host, "k0s", "auto", 5)
    assert not k0s.pending and not k0s.restarted and "reloads containerd itself" in k0s.reason
    systemd = ScriptedSystemd({"k0sworker.service": [unit(1), unit(1), unit(2)]})  # pick_unit reads one
    assert service.restart_containerd(host, "k0s", "systemd", 5, transport=systemd).unit == "k0sworker.service"
    with pytest.raises(ServiceError, match="cannot reach the node's systemd") as err:
        service.restart_containerd(host, "containerd", "auto", 5)
    assert err.value.hint == service.DAEMONSET_HINT


def test_the_result_rounds_elapsed():
    assert RestartResult("dbus", "u", elapsed=1.23456).as_dict()["elapsed"] == 1.235


def serve_private_socket(path: Path, prefix: list[str]) -> subprocess.Popen:
    """A real process (in a new PID namespace with `prefix`) listening where systemd's private socket is."""
    code = (f"import socket\ns = socket.socket(socket.AF_UNIX); s.bind({str(path)!r}); s.listen(4)\n"
            "print('ready', flush=True)\nwhile True:\n    c, _ = s.accept(); c.close()\n")
    proc = subprocess.Popen([*prefix, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def private_socket(tmp_path) -> Path:
    path = tmp_path / "run/systemd/private"
    path.parent.mkdir(parents=True)
    return path


def test_a_private_socket_in_our_pid_namespace_is_spoken_to_over_dbus(tmp_path):
    path = private_socket(tmp_path)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    try:
        transport = service.choose_transport(HostRoot(tmp_path))
    finally:
        server.close()
    assert isinstance(transport, service.DbusTransport) and transport.endpoint == str(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a PID namespace")
def test_a_private_socket_served_from_a_nested_pid_namespace_is_entered_with_nsenter(tmp_path):
    path = private_socket(tmp_path)
    proc = serve_private_socket(path, ["unshare", "--pid", "--fork", "--kill-child"])
    try:
        transport = service.choose_transport(HostRoot(tmp_path))
        served_by = next(int(p) for p in os.listdir("/proc") if p.isdigit() and _is_child_of(int(p), proc.pid))
    finally:
        proc.kill()
        proc.wait()
    assert isinstance(transport, service.SystemctlTransport) and transport.name == "nsenter"
    assert transport.prefix[:3] == ["nsenter", "-t", str(served_by)]
    assert transport.endpoint == f"nsenter -t {served_by} systemctl"


def _is_child_of(pid: int, parent: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1]) == parent
    except (OSError, ValueError, IndexError):
        return False


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to serve as another user")
def test_a_private_socket_served_by_a_non_root_process_is_not_entered():
    root = Path(tempfile.mkdtemp(prefix="nodeagent-svc-"))  # pytest's tmp_path is not reachable by uid 65534
    (root / "run/systemd").mkdir(parents=True)
    for directory in (root, root / "run", root / "run/systemd"):
        os.chmod(directory, 0o777)
    proc = serve_private_socket(root / "run/systemd/private", [
        "unshare", "--pid", "--fork", "--kill-child", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
    try:
        transport = service.choose_transport(HostRoot(root))
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(root)
    assert isinstance(transport, service.DbusTransport), "only a root peer (systemd) is ever nsenter'ed"


def test_systemctl_show_output_is_parsed_from_a_real_process():
    # a prefix is a real command line; here `sh -c` prints what `systemctl show` prints and ignores the rest
    show = "printf 'LoadState=loaded\\nActiveState=active\\nMainPID=\\nResult=exit=code\\ngarbage\\n'"
    transport = service.SystemctlTransport(["sh", "-c", show, "sh"])
    assert transport.state("containerd.service") == UnitState(load_state="loaded", active_state="active",
                                                              result="exit=code", main_pid=0)
    assert service.SystemctlTransport().endpoint == "systemctl"
