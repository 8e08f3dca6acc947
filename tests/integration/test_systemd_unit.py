"""systemd/*.service and *.timer: verified by systemd-analyze, then run under a real systemd.

The node is this machine's own systemd booted in namespaces (tests/support/systemd_node.py) with
Debian's containerd.service; nodeagent is pip-installed into the unit's virtualenv path inside it.
Nothing here touches the real host's /etc/systemd or /usr/local.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jinja2
import pytest

from nodeagent.containerd import cri
from tests.support import node_venv
from tests.support.systemd_node import SystemdNode
from tests.support.wait import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.root]

REPO = Path(__file__).resolve().parents[2]
UNIT_DIR = REPO / "systemd"
AGENT_UNIT = UNIT_DIR / "nodeagent.service"
UNITS = sorted(UNIT_DIR.glob("*.service")) + sorted(UNIT_DIR.glob("*.timer"))
ROLE_UNIT_TEMPLATE = REPO / "ansible/roles/nodeagent/templates/nodeagent.service.j2"
EXEC = f"{node_venv.VENV}/bin/nodeagent"

# systemd-analyze verify insists that ExecStart binaries exist. Provide the unit's venv path as a
# stub on a tmpfs in a private mount namespace, so the real unit files are verified unchanged.
_VERIFY_SCRIPT = f"""set -e
mount -t tmpfs nodeagent-verify /usr/local/lib
mkdir -p {node_venv.VENV}/bin
printf '#!/bin/sh\\n' > {EXEC}
chmod +x {EXEC}
cp {EXEC} {node_venv.VENV}/bin/python
cd "$1"; shift
exec systemd-analyze verify "$@"
"""


def _verify(directory: Path, names: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _VERIFY_SCRIPT, "sh", str(directory), *names],
        capture_output=True, text=True, timeout=60,
    )


def test_every_unit_passes_systemd_analyze_verify():
    assert {u.name for u in UNITS} >= {"nodeagent.service", "nodeagent-converge.service", "nodeagent-converge.timer"}
    proc = _verify(UNIT_DIR, [u.name for u in UNITS])
    # no warnings either: unknown keys or bad values only warn, with exit 0
    assert (proc.returncode, proc.stderr, proc.stdout) == (0, "", "")


def test_verify_would_catch_a_broken_unit(tmp_path):
    """The check above can fail: a misspelt hardening key and a missing binary are reported."""
    text = AGENT_UNIT.read_text()
    (tmp_path / "nodeagent.service").write_text(text.replace("ProtectSystem=strict", "ProtectSytem=strict"))
    typo = _verify(tmp_path, ["nodeagent.service"])
    assert "Unknown key 'ProtectSytem'" in typo.stderr
    (tmp_path / "nodeagent.service").write_text(text.replace(EXEC, "/usr/local/lib/nodeagent/nope/nodeagent"))
    missing = _verify(tmp_path, ["nodeagent.service"])
    assert missing.returncode != 0 and "is not executable" in missing.stderr


def _directives(unit: Path, section_marker: str = "# --- sandboxing") -> list[str]:
    text = unit.read_text()
    start = text.index(section_marker)
    end = text.find("\n[", start)
    body = text[start:] if end < 0 else text[start:end]
    return [line for line in body.splitlines() if re.match(r"^[A-Z][A-Za-z]+=", line)]


def test_one_shot_converge_unit_has_the_agents_sandbox():
    agent = _directives(AGENT_UNIT)
    assert len(agent) > 20
    assert _directives(UNIT_DIR / "nodeagent-converge.service") == agent


def test_role_template_renders_exactly_this_unit():
    # Ansible renders templates with Jinja2 and trim_blocks=True
    env = jinja2.Environment(trim_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    rendered = env.from_string(ROLE_UNIT_TEMPLATE.read_text()).render(nodeagent_venv=node_venv.VENV)
    assert rendered == AGENT_UNIT.read_text()


# --- under a real systemd ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node():
    """A node with nodeagent in the unit's virtualenv and systemd/nodeagent.service installed."""
    node = SystemdNode().boot()
    try:
        node.wait_active("containerd.service")
        node.path("/usr/local/lib/nodeagent").mkdir(parents=True, exist_ok=True)
        node_venv.install_in_node(node)
        node.path("/etc/systemd/system/nodeagent.service").write_text(AGENT_UNIT.read_text())
        node.systemctl("daemon-reload")
        yield node
    finally:
        node.shutdown()


# Runs as the unit's main process (a drop-in swaps ExecStart) to do, under the unit's exact
# sandbox, each thing the agent must be able to do, and to prove what it must not.
_DUTIES = r'''
import fcntl, json, os, subprocess, time
RUNSCS = ("/usr/bin/runsc", "/opt/nodeagent-testenv/runsc-2024/usr/bin/runsc")
from nodeagent import sdnotify
from nodeagent.containerd import cri

out = {}

def check(name, fn):
    try:
        value = fn()
        out[name] = "ok" if value is None else value
    except Exception as exc:
        out[name] = f"{type(exc).__name__}: {exc}"

def write_probe(directory):
    path = os.path.join(directory, ".nodeagent-unit-probe")
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as fh:
        fh.write("x")
    os.unlink(path)

for d in ("/etc/containerd", "/opt/nodeagent/gvisor", "/usr/local/bin", "/var/lib/nodeagent/cache"):
    check("write " + d, lambda d=d: write_probe(d))

def swap_opt_symlink():  # how /opt/kata is replaced: new link under a temp name, rename over
    os.symlink("/opt/nodeagent/kata/x", "/opt/.nodeagent-tmp-kata")
    os.replace("/opt/.nodeagent-tmp-kata", "/opt/nodeagent-unit-probe")
    os.unlink("/opt/nodeagent-unit-probe")
check("swap /opt symlink", swap_opt_symlink)

def lock():  # flock needs no write access: the sandbox keeps /run, lock file included, read-only
    fd = os.open("/run/nodeagent.lock", os.O_RDONLY | os.O_NOFOLLOW)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)
check("lock /run/nodeagent.lock", lock)
check("denied lock write", lambda: os.open("/run/nodeagent.lock", os.O_RDWR))

for d in ("/usr/bin", "/etc", "/var/lib", "/run", "/usr/local/lib/nodeagent/venv", "/boot"):
    check("denied " + d, lambda d=d: write_probe(d))
check("home hidden", lambda: os.listdir("/root"))

def config_dump():
    proc = subprocess.run(["containerd", "config", "dump"], capture_output=True, text=True)
    assert proc.returncode == 0 and "io.containerd.grpc.v1.cri" in proc.stdout, proc.stderr
check("containerd config dump", config_dump)

def restart_containerd():
    show = ["systemctl", "show", "-p", "MainPID", "--value", "containerd"]
    before = subprocess.run(show, capture_output=True, text=True).stdout.strip()
    subprocess.run(["systemctl", "restart", "containerd"], check=True, capture_output=True)
    after = subprocess.run(show, capture_output=True, text=True).stdout.strip()
    assert before != after and after != "0", (before, after)
check("systemctl restart containerd", restart_containerd)

def cri_status():
    deadline = time.monotonic() + 10
    while True:
        try:
            status = cri.cri_status("/run/containerd/containerd.sock")
            if status.ok:
                return sorted(status.handlers)
        except Exception:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)
check("cri status", cri_status)

# runsc needs CAP_SYS_ADMIN (mounts, namespaces), which the unit no longer grants: it must fail
for runsc in RUNSCS:
    check("runsc do " + runsc, lambda r=runsc: (lambda p: p.stdout.strip() or p.stderr.strip()[-300:])(
        subprocess.run([r, "--network=none", "do", "uname", "-r"], capture_output=True, text=True, timeout=60)))

def kvm():
    fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    try:
        return fcntl.ioctl(fd, 0xAE00)  # KVM_GET_API_VERSION
    finally:
        os.close(fd)
check("kvm api version", kvm)
check("mem device blocked", lambda: os.open("/dev/mem", os.O_RDONLY))

def mount_tmpfs():  # ProtectSystem= must not be undone from inside: no CAP_SYS_ADMIN, @mount filtered
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"probe", b"/usr/local/bin", b"tmpfs", 0, None) == 0:
        return "mounted"
    return os.strerror(ctypes.get_errno())
check("mount", mount_tmpfs)
out["nofile"] = open("/proc/self/limits").read()

# a downloaded binary run only to learn its version: as nobody, offline (own user + net namespace)
def offline_as_nobody():
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                           "--no-new-privs", "--", "unshare", "--user", "--net", "--", "cat", "/proc/net/dev"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return sorted(l.split(":")[0].strip() for l in proc.stdout.splitlines()[2:])
check("offline as nobody", offline_as_nobody)
check("mount namespace", lambda: subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True).stderr.strip())

detect = subprocess.run(["/usr/local/lib/nodeagent/venv/bin/nodeagent", "-o", "json", "detect"],
                        capture_output=True, text=True)
out["detect"] = json.loads(detect.stdout) if detect.returncode == 0 else detect.stderr
out["no_new_privs"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0]
out["cap_bnd"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapBnd")][0]

with open("/var/lib/nodeagent/unit-duties.json", "w") as fh:
    json.dump(out, fh)
sdnotify.notify("READY=1")
'''


def _status(node, unit: str = "nodeagent.service") -> str:
    status = node.systemctl("status", "--no-pager", "-n", "40", unit, check=False).stdout
    return status + node.run(["journalctl", "-u", unit, "--no-pager", "-n", "40"], check=False).stdout


def _detect_outside(node, executable: str) -> dict:
    return json.loads(node.run([executable, "-o", "json", "detect"]).stdout)


def test_agent_duties_work_inside_the_units_sandbox(node):
    # Real character devices for the probes: KVM (allowed) and /dev/mem (must stay blocked).
    node.run(["sh", "-c", "[ -e /dev/kvm ] || mknod -m 0660 /dev/kvm c 10 232; [ -e /dev/mem ] || mknod -m 0640 /dev/mem c 1 1"])
    node.path("/srv").mkdir(exist_ok=True)
    node.path("/srv/unit-duties.py").write_text(_DUTIES)
    dropin = node.path("/etc/systemd/system/nodeagent.service.d")
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "50-duties.conf").write_text(textwrap.dedent(f"""\
        [Service]
        ExecStart=
        ExecStart={node_venv.VENV}/bin/python /srv/unit-duties.py
        Restart=no
    """))
    node.systemctl("daemon-reload")
    # what the old units' `touch` under UMask=0022 left behind: a lock others can open (L2)
    node.run(["sh", "-c", "rm -f /run/nodeagent.lock; touch /run/nodeagent.lock; chmod 0644 /run/nodeagent.lock"])
    try:
        proc = node.systemctl("start", "nodeagent.service", check=False)
        assert proc.returncode == 0, _status(node)
        result = json.loads(node.path("/var/lib/nodeagent/unit-duties.json").read_text())
        # the unit's ExecStartPre replaced it with a root-only 0600 file before the sandbox bound it
        assert node.run(["stat", "-c", "%a %u %g %F", "/run/nodeagent.lock"]).stdout.split() == \
            ["600", "0", "0", "regular", "empty", "file"]
    finally:
        (dropin / "50-duties.conf").unlink()
        node.systemctl("daemon-reload")
        node.systemctl("reset-failed", "nodeagent.service", check=False)

    for path in ("/etc/containerd", "/opt/nodeagent/gvisor", "/usr/local/bin", "/var/lib/nodeagent/cache"):
        assert result[f"write {path}"] == "ok", result
    assert result["swap /opt symlink"] == "ok"
    assert result["lock /run/nodeagent.lock"] == "ok"
    assert "Read-only file system" in result["denied lock write"]
    for path in ("/usr/bin", "/etc", "/var/lib", "/run", "/usr/local/lib/nodeagent/venv", "/boot"):
        assert "Read-only file system" in result[f"denied {path}"], (path, result[f"denied {path}"])
    assert result["home hidden"] == [] or "Permission denied" in str(result["home hidden"])
    assert result["containerd config dump"] == "ok"
    assert result["systemctl restart containerd"] == "ok"
    assert "runc" in result["cri status"], result["cri status"]
    for key in ("runsc do /usr/bin/runsc", "runsc do /opt/nodeagent-testenv/runsc-2024/usr/bin/runsc"):
        # no CAP_SYS_ADMIN, read-only cgroups, no mount namespaces: no sandbox from here
        assert result[key] != "4.4.0" and ("not permitted" in result[key] or "read-only" in result[key]), result[key]
    assert result["mount"] == "Operation not permitted"
    assert result["offline as nobody"] == ["lo"], result["offline as nobody"]
    assert "Operation not permitted" in result["mount namespace"], result["mount namespace"]  # RestrictNamespaces
    assert re.search(r"Max open files\s+1024\s+1024", result["nofile"]), result["nofile"]
    assert result["kvm api version"] == 12
    assert "Operation not permitted" in result["mem device blocked"]
    assert result["no_new_privs"] == "1"
    cap_bnd = int(result["cap_bnd"], 16)
    assert cap_bnd != int("1ffffffffff", 16)
    assert not cap_bnd & (1 << 21), "CAP_SYS_ADMIN (21) is in the bounding set"
    # detection sees the same host under the sandbox as outside it
    outside = _detect_outside(node, EXEC)
    assert isinstance(result["detect"], dict), result["detect"]
    for key in ("virtualization", "containerd", "runtimes", "systemd"):
        inside, out = result["detect"][key], outside[key]
        if key == "containerd":  # containerd was restarted by the probe above: new pid
            inside, out = {**inside, "pid": None}, {**out, "pid": None}
        assert inside == out, key
    node.wait_active("containerd.service")


def _with_runsc_grants(directives: list[str]) -> list[str]:
    """The unit's sandbox plus what `runsc do` (`nodeagent verify`, run from a shell) needs: the
    capabilities the unit drops (SYS_ADMIN, SYS_CHROOT, SETFCAP), the mount calls, cgroups and
    namespaces."""
    granted = []
    for d in directives:
        if d.startswith("CapabilityBoundingSet="):
            d += " CAP_SYS_ADMIN CAP_SYS_CHROOT CAP_SETFCAP"
        elif d.startswith("SystemCallFilter=~"):
            assert " @mount" in d
            d = d.replace(" @mount", "")
        elif d.startswith(("ProtectControlGroups=", "RestrictNamespaces=")):
            continue  # runsc creates its sandbox cgroups and every kind of namespace
        granted.append(d)
    return granted


@pytest.mark.parametrize("extra", [None, "ProtectControlGroups=yes", "RestrictNamespaces=yes", "MemoryDenyWriteExecute=yes"])
def test_runsc_needs_exactly_what_the_unit_no_longer_grants(node, extra):
    """The unit's sandbox cannot start a gVisor sandbox; with SYS_ADMIN (+ chroot, setfcap), the
    mount calls, cgroups and namespaces given back it can, and each of those options breaks it."""
    def run(directives: list[str]):
        argv = ["systemd-run", "--wait", "--pipe", "--quiet", "--collect"]
        for directive in directives + ([extra] if extra else []):
            argv += ["-p", directive]
        return node.run([*argv, "/usr/bin/runsc", "--network=none", "do", "uname", "-r"], check=False, timeout=60)

    if extra is None:
        bare = run(_directives(AGENT_UNIT))
        assert bare.returncode != 0 and bare.stdout.strip() != "4.4.0", (bare.stdout, bare.stderr)
    proc = run(_with_runsc_grants(_directives(AGENT_UNIT)))
    if extra is None:
        assert (proc.returncode, proc.stdout.strip()) == (0, "4.4.0"), proc.stderr
    else:
        assert proc.returncode != 0 and proc.stdout.strip() != "4.4.0", (extra, proc.stdout, proc.stderr)


_HOLD_LOCK = r"""
import fcntl, os, sys
fd = os.open("/run/nodeagent.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("held", flush=True)
sys.stdin.read()
"""


def test_one_shot_converge_fails_visibly_when_another_nodeagent_holds_the_lock(node):
    """Exit 3 ("locked") used to be SuccessExitStatus: a held lock stopped convergence silently."""
    node.path("/etc/systemd/system/nodeagent-converge.service").write_text(
        (UNIT_DIR / "nodeagent-converge.service").read_text())
    node.systemctl("daemon-reload")
    holder = subprocess.Popen(["nsenter", "-t", str(node.pid), "-m", "-u", "-i", "-n", "-p", "--",
                               "python3", "-c", _HOLD_LOCK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = node.systemctl("start", "nodeagent-converge.service", check=False)
        assert proc.returncode != 0, _status(node, "nodeagent-converge.service")
        assert node.unit_property("nodeagent-converge.service", "Result") == "exit-code"
        assert node.unit_property("nodeagent-converge.service", "ExecMainStatus") == "3"
        assert "another nodeagent holds /run/nodeagent.lock" in _status(node, "nodeagent-converge.service")
    finally:
        holder.stdin.close()
        holder.wait(30)
        node.systemctl("reset-failed", "nodeagent-converge.service", check=False)


# --- the real agent under the real unit --------------------------------------------------------

# A mirror on 127.0.0.1 inside the node's network namespace that holds every request until the
# test opens the gate: the agent's first converge (which fetches digests and artifacts from it)
# then takes exactly as long as the test wants, with no knob in the agent.
_GATED_MIRROR = r'''
import functools, http.server, os, sys, time
root, gate, port, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

class Handler(http.server.SimpleHTTPRequestHandler):
    def _hold(self):
        with open(log, "a") as fh:
            fh.write(self.command + " " + self.path + "\n")
        deadline = time.monotonic() + 120
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.05)
    def do_GET(self):
        self._hold()
        super().do_GET()
    def do_HEAD(self):
        self._hold()
        super().do_HEAD()
    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=root))
server.daemon_threads = True
server.serve_forever()
'''
MIRROR_PORT = 18080


def _wait(predicate, timeout: float, what: str, node=None):
    return wait_for(predicate, timeout, what, detail=(lambda: _status(node)) if node else None)


@pytest.fixture(scope="module")
def agent(node, tmp_path_factory):
    """The real `nodeagent agent` configured against the gated mirror; the gate starts closed."""
    work = tmp_path_factory.mktemp("gated-mirror")
    node_venv.make_gvisor_mirror(node.path("/srv/mirror"))
    gate, log = work / "open", work / "requests.log"
    log.touch()
    server = subprocess.Popen(
        ["nsenter", "-t", str(node.pid), "-n", "--", sys.executable, "-c", _GATED_MIRROR,
         str(node.path("/srv/mirror")), str(gate), str(MIRROR_PORT), str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        node.path("/etc/nodeagent").mkdir(parents=True, exist_ok=True)
        node.path("/etc/nodeagent/config.toml").write_text(textwrap.dedent(f"""\
            runtime = "gvisor"
            mirror = "http://127.0.0.1:{MIRROR_PORT}"
            pins = "/srv/mirror.pins"
            gvisor_version = "{node_venv.GVISOR_VERSION}"
            restart = "systemd"
            listen = "127.0.0.1:9101"
            interval = 3600
        """))
        yield node, gate, log
    finally:
        gate.touch()
        node.systemctl("stop", "nodeagent.service", check=False)
        server.kill()
        server.wait(10)


def test_unit_is_active_only_after_the_agent_signals_ready(agent):
    node, gate, log = agent
    node.systemctl("start", "--no-block", "nodeagent.service")
    # the agent's first converge is under way: it is waiting for the mirror
    _wait(lambda: log.read_text().strip(), 60, "the agent's first request to the mirror", node)
    held_since = time.monotonic()
    while time.monotonic() - held_since < 1.5:
        state = (node.unit_property("nodeagent.service", "ActiveState"), node.unit_property("nodeagent.service", "SubState"))
        assert state == ("activating", "start"), state
        time.sleep(0.1)
    main_pid = node.main_pid("nodeagent.service")
    assert main_pid > 0
    gate.touch()
    _wait(lambda: node.unit_property("nodeagent.service", "ActiveState") == "active", 120, "READY=1", node)
    # the same process became ready (Type=notify), it was not restarted into readiness
    assert node.main_pid("nodeagent.service") == main_pid
    requests = log.read_text()
    assert f"/gvisor/{node_venv.GVISOR_VERSION}/" in requests, requests
    # and that first converge, done entirely inside the unit's sandbox, really converged the node:
    # artifacts placed, containerd's config edited, containerd restarted, the handler served
    assert node.unit_property("nodeagent.service", "StatusText") == "converged", _status(node)
    assert os.readlink(node.path("/usr/local/bin/runsc")) == f"/opt/nodeagent/gvisor/{node_venv.GVISOR_VERSION}/runsc"
    assert "runsc" in cri.cri_status(node.containerd_socket).handlers


def test_unit_restarts_the_agent_after_a_crash(agent):
    node, gate, _ = agent
    gate.touch()
    if node.unit_property("nodeagent.service", "ActiveState") != "active":
        node.systemctl("start", "nodeagent.service")
    before = node.main_pid("nodeagent.service")
    restarts = int(node.unit_property("nodeagent.service", "NRestarts"))
    node.run(["kill", "-SEGV", str(before)])
    # RestartSec=10s, then a new process that must signal READY again
    _wait(lambda: node.main_pid("nodeagent.service") not in (0, before)
          and node.unit_property("nodeagent.service", "ActiveState") == "active", 60, "a restarted agent", node)
    # systemd's Restart=on-failure did it (not a manual start)
    assert int(node.unit_property("nodeagent.service", "NRestarts")) == restarts + 1
