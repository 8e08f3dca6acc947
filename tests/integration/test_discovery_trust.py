"""A local user must not be able to steer discovery (issue 11 §1, security review C1).

The attack, for real: someone without root starts a process whose executable is named
`containerd`, with `--config <the flavor's config>` (so it looks like the real one) and
`--address <a socket of theirs>`. Before the fix nodeagent picked it, ran its binary as root
(`--version`, `config dump`; through /proc/<pid>/exe from a DaemonSet pod) and trusted its
socket. The fake (tests/support/fake_containerd.py) writes a marker file whenever anyone runs
it other than as its "daemon", so an absent marker proves nothing executed it.

Read-only commands (`detect`, `doctor`, `plan`) run on this machine's live root (its
/etc/containerd is snapshotted and must not change); `install` runs inside a systemd node
(an overlay of this machine, tests/support/systemd_node.py), and the DaemonSet case as a pod
of that node, which sees the node's processes only through <root>/proc.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from nodeagent.containerd.cri import CriClient, CriError, cri_status
from nodeagent.detect.procs import find
from nodeagent.host import HostRoot
from tests.support.cli import run_cli
from tests.support.fake_containerd import NOBODY, build, world_writable_dir
from tests.support.mirror import default_mirror
from tests.support.tree import diff_snapshots, snapshot
from tests.support.wait import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.root]
# Hostile input that must be refused with the host unchanged: counted in the bad-input catalogue
# by hand, since the commands succeed (they must keep working for the real containerd) rather
# than print error:/hint:.
hostile = pytest.mark.bad_input

FLAVOR_CONFIG = "/etc/containerd/config.toml"
REPO = Path(__file__).resolve().parents[2]


def _as_setuid_user() -> None:
    """What a setuid-root binary started by `nobody` looks like: real uid nobody, effective 0."""
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 0, 0)


# how the attacker's process runs: argv prefix, preexec function, the user doctor must name
ATTACKERS = {
    "nobody": (NOBODY, None, "nobody"),
    "setuid-like": ([], _as_setuid_user, "nobody"),
    "root-from-a-writable-dir": ([], None, "root"),  # root ran a binary that anyone could replace
}


@pytest.fixture
def attacker_dir():
    path = world_writable_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start():
    """start(argv, socket_path, preexec) -> Popen, once the process listens; killed by PID after."""
    started: list[subprocess.Popen] = []
    extra: list[int] = []

    def _start(argv, sock: Path, preexec=None) -> subprocess.Popen:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=preexec, start_new_session=True)
        started.append(proc)
        wait_for(lambda: sock.exists() or proc.poll() is not None, 15, f"{argv[0]} to listen on {sock}")
        assert proc.poll() is None, proc.stderr.read().decode()
        return proc

    _start.extra = extra  # PIDs of grandchildren (behind nsenter) to end as well
    yield _start
    for pid in extra:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    for proc in started:
        proc.kill()
        proc.wait(timeout=10)


def _checks(proc: subprocess.CompletedProcess) -> dict[str, dict]:
    return {c["id"]: c for c in json.loads(proc.stdout)["checks"]}


@hostile
@pytest.mark.parametrize("who", sorted(ATTACKERS))
def test_a_local_process_named_containerd_is_never_run_nor_believed(who, attacker_dir, start):
    prefix, preexec, user = ATTACKERS[who]
    marker = attacker_dir / "marker"
    binary = build(attacker_dir, [str(marker)])
    sock = attacker_dir / "containerd.sock"
    attacker = start([*prefix, str(binary), "--config", FLAVOR_CONFIG, "--address", str(sock)], sock, preexec)
    etc_before = snapshot("/etc/containerd")

    detect = run_cli("detect", "-o", "json")
    doctor = run_cli("doctor", "-o", "json")
    plan = run_cli("plan", "--runtime", "gvisor", "--restart", "none", "-o", "json")

    assert not marker.exists(), f"nodeagent ran the attacker's binary: {marker.read_text()}"
    assert detect.returncode == 0, detect.stderr
    facts = json.loads(detect.stdout)["containerd"]
    assert facts["pid"] != attacker.pid and facts["socket"] != str(sock) and facts["binary"] != str(binary)
    believed = {k: v for k, v in facts.items() if k != "untrusted_processes"}
    assert str(attacker_dir) not in json.dumps(believed), believed
    named = {p["pid"]: p for p in facts["untrusted_processes"]}
    assert named[attacker.pid]["binary"] == str(binary) and named[attacker.pid]["user"] == user

    check = _checks(doctor)["containerd-trust"]
    assert check["status"] == "warn", check
    assert f"pid {attacker.pid} (user {user}, binary {binary})" in check["summary"]
    assert str(sock) not in doctor.stdout and str(sock) not in plan.stdout
    assert f"containerd: ignored pid {attacker.pid} (user {user}, binary {binary})" in run_cli("detect").stdout
    assert not marker.exists()
    assert diff_snapshots(etc_before, snapshot("/etc/containerd")) == []


@hostile
def test_a_local_process_named_k3s_does_not_pick_the_flavor(attacker_dir, start):
    """A running `k3s` process is the strongest flavor evidence: from nobody it must count for nothing."""
    binary = build(attacker_dir, [str(attacker_dir / "marker")]).rename(attacker_dir / "k3s")
    sock = attacker_dir / "k3s.sock"
    start([*NOBODY, str(binary), "--address", str(sock)], sock)
    before = snapshot("/etc/containerd")
    facts = json.loads(run_cli("detect", "-o", "json").stdout)["containerd"]
    assert facts["flavor"] == "containerd" and "process k3s" not in facts["flavor_evidence"]
    assert not facts["config_path"].startswith("/var/lib/rancher")
    assert not (attacker_dir / "marker").exists()
    assert diff_snapshots(before, snapshot("/etc/containerd")) == []


def test_a_root_containerd_is_still_found_next_to_an_attacker(containerd_factory, attacker_dir, start):
    """No regression: the trusted daemon wins, is run for its version, and doctor says ok about it."""
    daemon = containerd_factory("2.1")
    binary = build(attacker_dir, [str(attacker_dir / "marker")])
    sock = attacker_dir / "containerd.sock"
    attacker = start([*NOBODY, str(binary), "--config", str(daemon.config_path), "--address", str(sock)], sock)

    detect = run_cli("detect", "-o", "json", "--containerd-config", str(daemon.config_path))
    facts = json.loads(detect.stdout)["containerd"]
    assert (facts["pid"], facts["socket"], facts["binary"]) == (daemon.pid, str(daemon.socket), str(daemon.binary))
    assert facts["version"].startswith("2.1.")
    assert attacker.pid in {p["pid"] for p in facts["untrusted_processes"]}
    assert not (attacker_dir / "marker").exists()


def test_trust_verdicts_of_live_processes(containerd_factory):
    from nodeagent.detect import trust

    daemon = containerd_factory("1.6")
    host = HostRoot("/")
    ours = next(p for p in find(host, ("containerd",)) if p.pid == daemon.pid)
    assert trust.process_verdict(host, ours) == trust.TRUSTED
    assert trust.socket_verdict(host, str(daemon.socket)) == trust.TRUSTED


# ---- sockets --------------------------------------------------------------------------------


def _listen_as_nobody(path: Path, start) -> subprocess.Popen:
    code = ("import socket, signal, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8); "
            "signal.pause()")
    return start([*NOBODY, sys.executable, "-c", code, str(path)], path)


@hostile
def test_a_socket_not_owned_by_root_is_not_trusted(start):
    """In a --root tree, /run/containerd belongs to nobody, who serves the flavor's socket there."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="nodeagent-root-"))
    try:
        os.chmod(root, 0o755)
        rundir = root / "run/containerd"
        rundir.mkdir(parents=True)
        os.chown(rundir, 65534, 65534)
        _listen_as_nobody(rundir / "containerd.sock", start)
        before = snapshot(root)

        facts = json.loads(run_cli("--root", str(root), "detect", "-o", "json").stdout)["containerd"]
        assert facts["socket"] is None and facts["untrusted_socket"] == "/run/containerd/containerd.sock"
        assert any("not trusting CRI socket /run/containerd/containerd.sock: /run/containerd is owned by uid 65534"
                   in r for r in facts["reasons"])
        doctor = _checks(run_cli("--root", str(root), "doctor", "-o", "json"))
        assert doctor["cri-handlers"]["status"] == "skip"
        assert diff_snapshots(before, snapshot(root)) == []
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_root_owned_socket_served_by_another_user_is_refused(attacker_dir, start):
    """The file's owner is not enough: whoever answers (SO_PEERCRED) must be root too."""
    sock = attacker_dir / "cri.sock"
    server = _listen_as_nobody(sock, start)
    os.chown(sock, 0, 0)  # as if root had chowned it: the listener is still nobody
    status = cri_status(sock, timeout=5)
    assert not status.answers
    assert status.reason == f"not trusted: the process serving {sock} (pid {server.pid}) runs as uid 65534, not root"
    with CriClient(sock, timeout=5) as client, pytest.raises(CriError, match="runs as uid 65534, not root"):
        client.list_pods()


# ---- a node: from a DaemonSet pod, and install inside it -------------------------------------


def _start_in_node(node, attacker_dir: Path, start) -> tuple[int, str, list[Path]]:
    """The attacker inside the node, as nobody: (its PID in the node, its socket, marker paths to check)."""
    node_dir = f"/var/tmp/{attacker_dir.name}"
    node.path(node_dir).mkdir()
    os.chmod(node.path(node_dir), 0o777)
    os.chown(node.path(node_dir), 65534, 65534)
    # it may run in the node's mount namespace or (from a pod) in this machine's: a marker in each
    markers = [f"{node_dir}/marker", str(attacker_dir / "marker")]
    build(node.path(node_dir), markers)
    sock = f"{node_dir}/containerd.sock"
    nsenter = start(node.nsenter_argv([*NOBODY, f"{node_dir}/containerd", "--config", FLAVOR_CONFIG, "--address", sock]),
                    node.path(sock))
    child = wait_for(lambda: next((c for c in psutil.Process(nsenter.pid).children(recursive=True)
                                   if c.name() == "containerd"), None), 10, "the attacker inside the node")
    start.extra.append(child.pid)
    with open(f"/proc/{child.pid}/status") as fh:
        node_pid = int(next(line for line in fh if line.startswith("NSpid:")).split()[-1])
    return node_pid, sock, [node.path(markers[0]), Path(markers[1])]


@hostile
def test_from_a_daemonset_pod_the_attackers_exe_is_never_run(clean_node, attacker_dir, start):
    node = clean_node
    node_pid, sock, markers = _start_in_node(node, attacker_dir, start)
    before = snapshot(node.path("/etc/containerd"))
    try:
        na = [sys.executable, "-m", "nodeagent", "-o", "json"]
        detect = node.run_pod([*na, "detect"], check=False)
        doctor = node.run_pod([*na, "doctor"], check=False)
        node.run_pod([*na, "plan", "--runtime", "gvisor", "--restart", "none"], check=False)

        for marker in markers:
            assert not marker.exists(), f"nodeagent ran the attacker's binary: {marker.read_text()}"
        assert detect.returncode == 0, detect.stderr
        facts = json.loads(detect.stdout)["containerd"]
        # the unit's containerd (flag-less Debian unit) is the one believed; version from dpkg
        assert (facts["pid"], facts["socket"], facts["binary"]) == (node.main_pid(), "/run/containerd/containerd.sock",
                                                                     "/usr/bin/containerd")
        assert facts["version"].startswith("1.6.")
        check = _checks(doctor)["containerd-trust"]
        assert check["status"] == "warn" and f"pid {node_pid} (user nobody, binary {Path(sock).parent}/containerd)" \
            in check["summary"], check
        assert sock not in doctor.stdout.replace(check["summary"], "")
        assert diff_snapshots(before, snapshot(node.path("/etc/containerd"))) == []
    finally:
        shutil.rmtree(node.path(f"/var/tmp/{attacker_dir.name}"), ignore_errors=True)


def test_install_inside_the_node_ignores_the_attacker(clean_node, attacker_dir, start):
    node = clean_node
    mirror = "/srv/nodeagent-mirror"
    if not node.path(mirror).exists():
        shutil.copytree(default_mirror(), node.path(mirror))
    original = node.path(FLAVOR_CONFIG).read_bytes()
    node_pid, sock, markers = _start_in_node(node, attacker_dir, start)
    na = [sys.executable, "-m", "nodeagent", "-o", "json"]
    # nsenter -m starts in the node's /: without PYTHONPATH, python would import the package
    # installed on this machine (pip -e of another checkout), not the one under test
    env = {"PYTHONPATH": str(REPO)}
    try:
        proc = node.run([*na, "install", "--runtime", "gvisor", "--restart", "none", "--mirror", mirror], check=False,
                        timeout=180, env=env)
        for marker in markers:
            assert not marker.exists(), f"nodeagent ran the attacker's binary: {marker.read_text()}"
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        changed = [f["path"] for f in report["files"] if f["action"] != "none"]
        assert FLAVOR_CONFIG in changed and not any(p.startswith(str(Path(sock).parent)) for p in changed), changed
        assert sock not in proc.stdout and sock not in proc.stderr
    finally:
        node.run([*na, "uninstall", "--restart", "none", "--force"], check=False, timeout=120, env=env)
        node.path(FLAVOR_CONFIG).write_bytes(original)
        shutil.rmtree(node.path(f"/var/tmp/{attacker_dir.name}"), ignore_errors=True)


def test_the_units_main_pid_comes_from_systemd_over_its_private_socket(clean_node):
    """Inside the node (live root) and from a pod of it, systemd names containerd.service's MainPID."""
    code = ("import json, os; from nodeagent.host import HostRoot; from nodeagent.detect import unit_pid, procs; "
            "h = HostRoot(os.environ.get('NODEAGENT_ROOT', '/')); "
            "print(json.dumps([sorted(unit_pid.main_pids(h, ('containerd.service',))), "
            "[unit_pid.innermost_pid(p) for p in procs.find(h, ('containerd',))]]))")
    main = clean_node.main_pid()
    inside = clean_node.run([sys.executable, "-c", code], env={"PYTHONPATH": str(REPO)})
    pod = clean_node.run_pod([sys.executable, "-c", code], env={"PYTHONPATH": str(REPO)})
    for proc in (inside, pod):
        assert json.loads(proc.stdout) == [[main], [main]], proc.stdout
