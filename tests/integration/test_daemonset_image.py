"""The DaemonSet path for real: the built image runs as a container under the node's own containerd.

tests/integration/test_agent_node.py runs the agent from the machine with `--root /proc/<pid>/root`:
there the node's systemd lives in a PID namespace below the agent's, so the agent reaches it with
nsenter, a path a real DaemonSet pod never takes. Here nothing of that remains:

- the node is this machine's systemd booted in namespaces (tests/support/systemd_node.py) running
  Debian's containerd.service;
- the image is built from this checkout (scripts/build-image), imported into the node's containerd
  (`ctr -n k8s.io images import` inside the node) and run there with `ctr run`: privileged, the
  node's `/` rbind-mounted at /host, NODEAGENT_ROOT=/host, the node's network (`--net-host`), and
  ctr's default of a NEW PID namespace, i.e. no hostPID (deploy/daemonset.yaml as shipped);
- the Kubernetes API is the loopback STAND-IN (tests/support/fake_apiserver.py; no kube-apiserver
  can be had here), listening on the node's own 127.0.0.1 (its socket is made inside the node's
  network namespace, tests/support/netns.py), so the pod reaches it as it would reach the cluster.

The agent must converge the node (runsc served through CRI, its files in place), restart the
containerd that runs its own container over systemd's private D-Bus socket under /host (the log
line says which way, and the test prints it), label the Node and report ready. `ctr run -d` with
the log in a file the shim writes: containerd's restart cuts every client off, while the shim and
the container keep running.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from nodeagent.containerd.cri import cri_status
from tests.support.fake_apiserver import TOKEN, FakeApiServer, free_port, kubeconfig_text, pki  # noqa: F401
from tests.support.mirror import default_mirror
from tests.support.netns import http_get
from tests.support.wait import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.root, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
TESTENV = Path(os.environ.get("NODEAGENT_TESTENV", "/opt/nodeagent-testenv"))
STORAGE = TESTENV / "image-storage"  # the private storage test_image.py uses: its layers are reused
IMAGE = "localhost/nodeagent:dev"
TASK = "nodeagent-daemonset"
WORK = "/var/tmp/nodeagent-daemonset"  # in the node (its overlay): image, mirror, kubeconfig, log
CONFIG = "/etc/containerd/config.toml"
NODE = "/api/v1/nodes/node-a"
DS = "/apis/apps/v1/namespaces/nodeagent/daemonsets/nodeagent"
P = "sandbox.nodeagent.io/"


def _build_image(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NODEAGENT_TESTENV": str(TESTENV)}
    return subprocess.run([str(REPO / "scripts/build-image"), "--storage", str(STORAGE), *args],
                          capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def archive():
    """The image of this checkout as an OCI archive (podman's caches cleaned after, as test_image does)."""
    out_dir = Path(tempfile.mkdtemp(prefix="na-ds-image-"))
    try:
        build = _build_image("--out", str(out_dir / "nodeagent.oci.tar"))
        assert build.returncode == 0, f"scripts/build-image failed:\n{build.stdout}\n{build.stderr[-4000:]}"
        yield out_dir / "nodeagent.oci.tar"
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        clean = _build_image("--clean")
    assert clean.returncode == 0, clean.stderr


def _ctr(node, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return node.run(["ctr", "--connect-timeout", "5s", "-n", "k8s.io", *args], check=check, timeout=timeout)


def _task_status(node) -> str:
    """RUNNING / STOPPED / ... of the agent's task ("" when there is none or containerd is restarting)."""
    out = _ctr(node, "task", "ls", check=False, timeout=30).stdout
    for line in out.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == TASK:
            return fields[-1]
    return ""


def _task_pid(node) -> int:
    out = _ctr(node, "task", "ls").stdout
    return next(int(line.split()[1]) for line in out.splitlines()[1:] if line.split()[0] == TASK)


def _log_events(node) -> list[dict]:
    """The agent's JSON log lines, as the shim wrote them to the container's log file."""
    try:
        text = node.path(f"{WORK}/agent.log").read_text(errors="replace")
    except OSError:
        return []
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            events.append({"event": line})
    return events


def _log_tail(node, n: int = 40) -> str:
    return "\n".join(json.dumps(e) for e in _log_events(node)[-n:])


@pytest.fixture
def pod_node(clean_node, archive, pki):  # noqa: F811
    """The node with the image imported, the gVisor mirror and a kubeconfig under WORK, the stand-in
    API serving on the node's loopback; afterwards the task, the image and the files are gone and
    the node's containerd config is what it was."""
    node = clean_node
    work = node.path(WORK)
    work.mkdir(parents=True)
    original = node.path(CONFIG).read_bytes()
    api = FakeApiServer(pki, tokens={TOKEN}, netns=f"/proc/{node.pid}/ns/net")
    try:
        shutil.copyfile(archive, work / "image.oci.tar")
        _ctr(node, "images", "import", f"{WORK}/image.oci.tar", timeout=300)
        (work / "image.oci.tar").unlink()
        shutil.copytree(default_mirror() / "gvisor", work / "mirror/gvisor")
        shutil.copyfile(pki.ca_cert, work / "ca.crt")
        api.start()
        # the pod sees the node's / at /host: the kubeconfig names the CA by its path in the pod
        (work / "kubeconfig").write_text(kubeconfig_text(
            api.url, user={"token": TOKEN}, cluster_extra={"certificate-authority": f"/host{WORK}/ca.crt"}))
        api.put_object(NODE, {"apiVersion": "v1", "kind": "Node", "metadata": {"labels": {"kubernetes.io/os": "linux"}}})
        api.put_object(DS, {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"namespace": "nodeagent"},
                            "spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}}})
        yield node, api
    finally:
        _ctr(node, "task", "kill", "-s", "SIGKILL", TASK, check=False)
        wait_for(lambda: _task_status(node) in ("", "STOPPED"), 30, "the agent's task to end")
        _ctr(node, "task", "delete", TASK, check=False)
        _ctr(node, "containers", "delete", TASK, check=False)
        _ctr(node, "images", "rm", "--sync", IMAGE, check=False)
        api.stop()
        shutil.rmtree(work, ignore_errors=True)
        if node.path(CONFIG).read_bytes() != original:
            subprocess.run([sys.executable, "-m", "nodeagent", "--root", str(node.root), "uninstall", "--force"],
                           capture_output=True, timeout=120)


def _run_agent_pod(node, health_port: int) -> None:
    """`ctr run -d` the image as the DaemonSet would run it (see the module doc)."""
    _ctr(node, "run", "-d", "--privileged", "--net-host",
         "--mount", "type=bind,src=/,dst=/host,options=rbind:rw",
         "--log-uri", f"file://{WORK}/agent.log",
         "--env", "NODEAGENT_ROOT=/host", "--env", "NODE_NAME=node-a", "--env", "POD_NAMESPACE=nodeagent",
         "--env", "NODEAGENT_LOG_FORMAT=json", "--env", "NODEAGENT_HEALTH_TIMEOUT=60",
         IMAGE, TASK,
         # -v: info lines too (the restart line names the way to systemd); the default is warnings only
         "nodeagent", "agent", "-v", "--kubeconfig", f"/host{WORK}/kubeconfig", "--node-name", "node-a",
         "--listen", f"127.0.0.1:{health_port}", "--interval", "2", "--runtime", "gvisor",
         "--mirror", f"/host{WORK}/mirror")


def test_image_as_a_pod_converges_the_node_and_restarts_containerd_over_dbus(pod_node):
    node, api = pod_node
    netns = f"/proc/{node.pid}/ns/net"
    health_port = free_port()
    containerd_before = node.main_pid()
    started = time.monotonic()
    _run_agent_pod(node, health_port)

    def ready() -> bool:
        status = _task_status(node)
        if status == "STOPPED":
            raise AssertionError(f"the agent's container exited:\n{_log_tail(node)}")
        return http_get(netns, f"http://127.0.0.1:{health_port}/readyz")[0] == 200

    wait_for(ready, 180, "the agent in the pod to report ready", interval=0.5, detail=lambda: _log_tail(node))
    sys.stderr.write(f"\ndaemonset pod: ready {time.monotonic() - started:.1f}s after ctr run\n")

    # it ran without hostPID: its PID namespace is not the node's
    pod_pid = _task_pid(node)
    assert os.readlink(node.path(f"/proc/{pod_pid}/ns/pid")) != os.readlink(node.path("/proc/1/ns/pid"))

    # converged: containerd serves the runsc handler through CRI, files and config in place
    assert "runsc" in cri_status(node.containerd_socket).handlers
    assert b"runsc" in node.path(CONFIG).read_bytes()
    # /usr/local/bin/runsc links into the node's /opt/nodeagent: run it there to see it is whole
    assert os.readlink(node.path("/usr/local/bin/runsc")).startswith("/opt/nodeagent/")
    assert "runsc version" in node.run(["/usr/local/bin/runsc", "--version"]).stdout

    # containerd, the one running this very container, was restarted over D-Bus, not nsenter
    restarts = [e for e in _log_events(node) if e.get("event") == "restarted"]
    assert restarts, f"no restart in the agent's log:\n{_log_tail(node)}"
    sys.stderr.write("daemonset pod restart log line: " + json.dumps(restarts[0]) + "\n")
    assert [(e["method"], e["via"]) for e in restarts] == [("dbus", "/host/run/systemd/private")]
    assert node.main_pid() not in (0, containerd_before)
    assert _task_status(node) == "RUNNING"  # the shim kept the pod through containerd's restart

    # the Node is labelled from what CRI serves, and the agent reports ready
    labels = wait_for(lambda: (api.object(NODE)["metadata"].get("labels") or {}).get(P + "state") == "ready"
                      and api.object(NODE)["metadata"]["labels"], 60, "the ready label")
    assert labels[P + "gvisor"] and labels["kubernetes.io/os"] == "linux"
    status, body = http_get(netns, f"http://127.0.0.1:{health_port}/metrics")
    assert status == 200 and re.search(r"^nodeagent_containerd_restarts_total 1(\.0)?$", body, re.M), \
        body + "\n" + _log_tail(node)

    # a rolling update stops the pod (SIGTERM) while the DaemonSet still selects the node
    _ctr(node, "task", "kill", "-s", "SIGTERM", TASK)
    wait_for(lambda: _task_status(node) == "STOPPED", 60, "the agent to stop on SIGTERM", interval=0.5,
             detail=lambda: _log_tail(node))
    deleted = _ctr(node, "task", "delete", TASK, check=False)
    assert deleted.returncode == 0, (deleted.stderr, _log_tail(node))  # ctr exits with the task's code
    events = _log_events(node)
    assert "stopping" in [e.get("event") for e in events]
    assert not any("Traceback" in json.dumps(e) for e in events)
    assert "runsc" in cri_status(node.containerd_socket).handlers
