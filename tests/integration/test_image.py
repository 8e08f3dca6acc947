"""The agent's container image, built for real and run under real containerd, sees the node as the host does.

Pipeline (all real, nothing stubbed): scripts/build-image makes a Debian base with debootstrap
(cached under $NODEAGENT_TESTENV), builds deploy/Containerfile with buildah into a private
containers-storage under $NODEAGENT_TESTENV (the machine's own podman images are never touched),
and saves an OCI archive; a real containerd 1.6 imports it (`ctr images import`) and runs
`nodeagent detect` / `nodeagent doctor` in it with the node's root bind-mounted read-only at
/host, which is how the DaemonSet sees the node. Their answers are compared with the same
commands run directly on this machine.

How the container is run, and why:
- `--privileged`: the DaemonSet is privileged (it edits the host's containerd and opens
  /dev/kvm); without it the devices cgroup refuses /dev/kvm and KVM would look unusable.
- with and without the host's PID namespace (`--with-ns pid:...` = a pod's hostPID). With it,
  nodeagent sees the node's containerd process exactly as on the host, and everything must match.
  deploy/daemonset.yaml ships *without* hostPID (restarts go through systemd's D-Bus socket), so
  that case is run too: node facts must still match, and the node's containerd process is seen
  through /host/proc (the node's procfs under the root). The test process's own
  PID namespace stands for the host's because on these VMs /proc/1/ns is not readable, even by
  root.
- `--containerd-config` names the test daemon's config on both sides, so both pick the same
  containerd process even when other tests' daemons run at the same moment.
- `ctr run` goes through `nsenter` into the daemon's mount namespace: the harness gives the
  daemon a private /run (tests/support/containerd_daemon.py), and ctr creates the container's
  stdio FIFOs under /run/containerd/fifo, where the shim must find them (and where they must not
  land on the real host).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.containerd_daemon import ContainerdDaemon, new_daemon

pytestmark = [pytest.mark.integration, pytest.mark.root, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
TESTENV = Path(os.environ.get("NODEAGENT_TESTENV", "/opt/nodeagent-testenv"))
STORAGE = TESTENV / "image-storage"
IMAGE = "localhost/nodeagent:dev"
SIZE_GOAL = 200 * 1000 * 1000  # bytes, uncompressed (the goal: under 200 MB)

# detect keys that describe *how* nodeagent looked, not the node: they must differ.
DETECT_VIEWPOINT_KEYS = {"root", "root_is_live"}

TIMINGS: dict[str, float] = {}  # seconds, printed at teardown for the report
SIZES: dict[str, float] = {}  # MB


NET: dict[str, tuple] = {}


def _host_networking() -> tuple:
    """What a private build network would change: IP forwarding and the interface list."""
    return Path("/proc/sys/net/ipv4/ip_forward").read_text(), tuple(sorted(os.listdir("/sys/class/net")))


def _build_image(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NODEAGENT_TESTENV": str(TESTENV)}
    return subprocess.run(
        [str(REPO / "scripts/build-image"), "--storage", str(STORAGE), *args],
        capture_output=True, text=True, env=env, timeout=900,
    )


@pytest.fixture(scope="module")
def archive():
    """The image built from this checkout, as an OCI archive; podman's leftovers cleaned after."""
    out_dir = Path(tempfile.mkdtemp(prefix="na-image-"))
    out = out_dir / "nodeagent.oci.tar"
    NET["before"] = _host_networking()
    try:
        start = time.monotonic()
        build = _build_image("--out", str(out))
        TIMINGS["build (incl. base and save)"] = time.monotonic() - start
        NET["after"] = _host_networking()
        assert build.returncode == 0, f"scripts/build-image failed:\n{build.stdout}\n{build.stderr[-4000:]}"
        yield out
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        clean = _build_image("--clean")
        _report()
    assert clean.returncode == 0, clean.stderr


@pytest.fixture(scope="module")
def daemon(archive):
    """A real containerd 1.6 (Debian's) holding the imported image."""
    base = Path(tempfile.mkdtemp(prefix="na-img-"))
    registry: list[ContainerdDaemon] = []
    try:
        d = new_daemon("1.6", base, registry=registry)
        start = time.monotonic()
        d.ctr("images", "import", str(archive), timeout=300)
        TIMINGS["ctr images import"] = time.monotonic() - start
        yield d
    finally:
        for d in registry:
            d.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def _report() -> None:
    sys.stderr.write("\nimage: " + ", ".join([*(f"{k} {v:.1f} MB" for k, v in SIZES.items()),
                                              *(f"{k} {v:.1f}s" for k, v in TIMINGS.items())]) + "\n")


def run_in_image(d: ContainerdDaemon, name: str, *argv: str, host_pid: bool = True) -> subprocess.CompletedProcess:
    """`ctr run --rm` the image privileged with the node's / at /host (read-only), as the DaemonSet would."""
    opts = ["--rm", "--privileged", "--mount", "type=bind,src=/,dst=/host,options=rbind:ro"]
    if host_pid:
        opts += ["--with-ns", f"pid:/proc/{os.getpid()}/ns/pid"]
    start = time.monotonic()
    proc = subprocess.run(
        ["nsenter", "-t", str(d.pid), "-m", "--", str(d.bindir / "ctr"), "--address", str(d.socket),
         "-n", "k8s.io", "run", *opts, IMAGE, name, *argv],
        capture_output=True, text=True, timeout=120,
    )
    TIMINGS[f"ctr run {name}"] = time.monotonic() - start
    return proc


def on_host(*argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODEAGENT_")}
    return subprocess.run([sys.executable, "-m", "nodeagent", *argv], capture_output=True, text=True, env=env, timeout=120)


def _json(proc: subprocess.CompletedProcess) -> dict:
    assert "Traceback" not in proc.stderr, proc.stderr
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"no JSON on stdout (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}")


def _image_config_and_layers(archive: Path) -> tuple[dict, list[tarfile.TarFile]]:
    outer = tarfile.open(archive)
    blob = lambda digest: outer.extractfile("blobs/" + digest.replace(":", "/"))  # noqa: E731
    index = json.load(outer.extractfile("index.json"))
    manifest = json.load(blob(index["manifests"][0]["digest"]))
    config = json.load(blob(manifest["config"]["digest"]))
    layers = []
    for layer in manifest["layers"]:
        raw = blob(layer["digest"])
        layers.append(tarfile.open(fileobj=gzip.GzipFile(fileobj=raw) if "gzip" in layer["mediaType"] else raw, mode="r|"))
    return config, layers


def test_image_metadata_size_and_no_build_secrets_in_layers(archive):
    config, layers = _image_config_and_layers(archive)
    assert config["config"]["Entrypoint"] == ["nodeagent"]
    assert config["config"]["Cmd"] == ["agent"]
    env = dict(e.split("=", 1) for e in config["config"]["Env"])
    assert env["NODEAGENT_ROOT"] == "/host" and env["NODEAGENT_LOG_FORMAT"] == "json"
    assert config["config"].get("User", "") in ("", "root", "0")  # root on purpose: see the Containerfile

    size = 0
    names: set[str] = set()
    for layer in layers:
        for member in layer:
            size += member.size
            names.add(member.name.lstrip("./"))
    SIZES["uncompressed"] = size / 1e6
    SIZES["archive"] = archive.stat().st_size / 1e6
    assert size < SIZE_GOAL, f"image is {size / 1e6:.0f} MB uncompressed, goal < {SIZE_GOAL / 1e6:.0f} MB"
    # The CA bundle and pip.conf were build secrets: mounted for one RUN, never in a layer. The
    # builder stage's pip and caches stay behind too.
    leaked = sorted(n for n in names if n.startswith(("run/secrets/", "root/.cache/", "src/"))
                    or n.endswith(("/pip.conf", "bin/pip", "bin/pip3")) or "site-packages/pip/" in n)
    assert not leaked, leaked
    assert "opt/nodeagent/bin/nodeagent" in names
    assert "usr/bin/nsenter" in names


def test_build_left_host_networking_alone(archive):
    # --network host: netavark/CNI would otherwise add a bridge, iptables chains and ip_forward=1.
    assert NET["after"] == NET["before"]


def test_build_image_rejects_unknown_arguments():
    proc = _build_image("--bogus")
    assert proc.returncode == 64
    lines = [line.split(":")[0] for line in proc.stderr.splitlines()]
    assert lines == ["error", "hint"], proc.stderr


def test_detect_in_the_image_matches_the_host(daemon):
    pin = ["--containerd-config", str(daemon.config_path)]
    inside = run_in_image(daemon, "detect", "nodeagent", "detect", "--root", "/host", "-o", "json", *pin)
    host = on_host("detect", "-o", "json", *pin)
    assert inside.returncode == host.returncode == 0, (inside.stderr[-2000:], host.stderr[-2000:])
    got, want = _json(inside), _json(host)

    assert got["root"] == "/host" and got["root_is_live"] is False
    assert want["root"] == "/" and want["root_is_live"] is True
    # The facts the scheduler depends on, spelled out so a failure names them ...
    for key in ("arch", "kernel", "virtualization", "runtimes", "systemd"):
        assert got[key] == want[key], key
    # ... and with hostPID the container finds the very containerd process the host does.
    assert got["containerd"]["running"] and got["containerd"]["pid"] == daemon.pid
    assert got["containerd"] == want["containerd"]
    # Everything else too: only the viewpoint keys may differ.
    assert {k: v for k, v in got.items() if k not in DETECT_VIEWPOINT_KEYS} == \
           {k: v for k, v in want.items() if k not in DETECT_VIEWPOINT_KEYS}


def test_doctor_in_the_image_matches_the_host(daemon):
    pin = ["--containerd-config", str(daemon.config_path)]
    inside = run_in_image(daemon, "doctor", "nodeagent", "doctor", "--root", "/host", "-o", "json", *pin)
    host = on_host("doctor", "-o", "json", *pin)
    got, want = _json(inside), _json(host)
    assert inside.returncode == host.returncode, (inside.returncode, host.returncode, inside.stderr[-2000:])
    assert got["status"] == want["status"]
    assert [c["id"] for c in got["checks"]] == [c["id"] for c in want["checks"]]
    for mine, theirs in zip(got["checks"], want["checks"]):
        assert (mine["id"], mine["status"], mine["hint"]) == (theirs["id"], theirs["status"], theirs["hint"])
        # containerd-config: on the live root doctor lets the host's containerd binary validate the
        # file (`config dump`); under /host it parses it itself, as the binary would resolve the
        # config's absolute paths (imports) in the container. Same verdict, different wording.
        if mine["id"] != "containerd-config":
            assert mine["summary"] == theirs["summary"], mine["id"]
    # the CRI check really reached the test daemon from inside the container
    cri = {c["id"]: c for c in got["checks"]}.get("cri-handlers")
    assert cri and cri["status"] == "ok" and "runc" in cri["summary"], cri


@pytest.fixture(scope="module")
def detect_without_host_pid(daemon) -> tuple[dict, dict]:
    """detect in a pod without hostPID (deploy/daemonset.yaml as shipped) and on the host."""
    pin = ["--containerd-config", str(daemon.config_path)]
    inside = run_in_image(daemon, "nohostpid", "nodeagent", "detect", "--root", "/host", "-o", "json", *pin, host_pid=False)
    host = on_host("detect", "-o", "json", *pin)
    return _json(inside), _json(host)


def test_without_host_pid_the_image_still_knows_the_node(detect_without_host_pid):
    """Node facts come from /host/proc, /host/sys, /host/dev: no PID namespace needed for them."""
    got, want = detect_without_host_pid
    for key in ("arch", "kernel", "virtualization", "runtimes", "systemd"):
        assert got[key] == want[key], key
    assert want["containerd"]["running"] is True
    assert got["containerd"]["found"] is True
    assert got["containerd"]["version"] == want["containerd"]["version"]


def test_without_host_pid_the_image_sees_the_node_containerd_through_host_proc(detect_without_host_pid, daemon):
    got, want = detect_without_host_pid
    assert got["containerd"]["pid"] == daemon.pid
    assert got["containerd"] == want["containerd"]


def test_bad_root_in_the_image_is_one_error_and_one_hint(daemon):
    proc = run_in_image(daemon, "badroot", "nodeagent", "detect", "--root", "/no/such/host")
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith(("error:", "hint:"))]
    assert [line.split(":")[0] for line in lines] == ["error", "hint"], proc.stderr
    assert "/no/such/host" in lines[0] and "Traceback" not in proc.stderr
