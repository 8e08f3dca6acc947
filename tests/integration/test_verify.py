"""`nodeagent verify` with real gVisor (`runsc do`, Debian's 2022 and 2024 builds) and real CRI pods."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from nodeagent import verify
from nodeagent.containerd.cri import CriClient
from nodeagent.host import HostRoot
from tests.support.cli import assert_known_error, run_cli
from tests.support.containerd_daemon import TESTENV, minimal_config
from tests.support.oci_image import TEST_IMAGE, import_test_images
from tests.support.tree import diff_snapshots, snapshot

pytestmark = pytest.mark.integration

HOST_KERNEL = os.uname().release
RUNSC_2022 = Path("/usr/bin/runsc")
RUNSC_2024 = TESTENV / "runsc-2024/usr/bin/runsc"


def _root_with_runsc(tmp_path: Path, runsc: Path | None) -> Path:
    """A fake node root holding `runsc` where nodeagent installs it (a hard link: same file, no copy)."""
    root = tmp_path / "root"
    (root / "usr/local/bin").mkdir(parents=True)
    if runsc is not None:
        try:
            os.link(runsc, root / "usr/local/bin/runsc")
        except OSError:
            shutil.copy2(runsc, root / "usr/local/bin/runsc")
    return root


def _write_exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_live_root_gvisor_sandbox_kernel_differs_from_host():
    proc = run_cli("verify", "--runtime", "gvisor", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    gvisor = json.loads(proc.stdout)["runtimes"]["gvisor"]
    assert gvisor["ok"] and gvisor["method"] == "runsc-do"
    assert gvisor["sandbox_kernel"] == "4.4.0" != gvisor["host_kernel"] == HOST_KERNEL
    assert gvisor["dmesg"][0].endswith("Starting gVisor...")


@pytest.mark.skipif(not RUNSC_2024.exists(), reason="runsc 2024 not installed (scripts/setup-test-env)")
def test_installed_runsc_under_root_is_used_and_nothing_is_written(tmp_path):
    root = _root_with_runsc(tmp_path, RUNSC_2024)
    before = snapshot(root)
    proc = run_cli("verify", "--root", str(root), "--runtime", "gvisor")
    assert proc.returncode == 0, proc.stderr
    assert "gvisor  ok    sandbox kernel 4.4.0 (host " in proc.stdout
    assert "dmesg: [    0.000000] Starting gVisor..." in proc.stdout
    assert diff_snapshots(before, snapshot(root)) == []
    check = verify.verify_gvisor(HostRoot(root))
    assert check.detail["runsc"] == str(root / "usr/local/bin/runsc")


def test_missing_runsc_is_a_known_error_and_all_skips_it(tmp_path):
    root = _root_with_runsc(tmp_path, None)
    before = snapshot(root)
    proc = run_cli("verify", "--root", str(root), "--runtime", "gvisor")
    assert "not installed" in assert_known_error(proc)
    proc = run_cli("verify", "--root", str(root), "-o", "json")
    assert "nothing was verified" in assert_known_error(proc)
    report = json.loads(proc.stdout)
    assert report["runtimes"]["gvisor"]["skipped"] and report["runtimes"]["kata"]["skipped"]
    assert diff_snapshots(before, snapshot(root)) == []


def test_a_runsc_that_runs_on_the_host_kernel_fails(tmp_path):
    """Stand-in for a broken install: a "runsc" that just execs the command on the host (what a
    handler silently falling back to runc looks like). verify must call it not isolated."""
    root = _root_with_runsc(tmp_path, None)
    _write_exe(root / "usr/local/bin/runsc",
               '#!/bin/sh\nwhile [ "$1" != do ]; do shift; done; shift; exec "$@"\n')
    proc = run_cli("verify", "--root", str(root), "--runtime", "gvisor", "-o", "json")
    error = assert_known_error(proc)
    assert "not isolated" in error and HOST_KERNEL in error
    assert json.loads(proc.stdout)["runtimes"]["gvisor"]["sandbox_kernel"] == HOST_KERNEL


def test_a_failing_runsc_is_reported_and_its_leaked_cgroup_removed(tmp_path):
    """runsc that dies after creating its runsc-NNNNNN cgroup (as a failed `runsc do` can leave)."""
    hierarchy = Path("/sys/fs/cgroup/pids")
    if not os.access(hierarchy, os.W_OK):
        pytest.skip("no writable v1 pids hierarchy to create a cgroup in")
    leaked = hierarchy / f"runsc-{uuid.uuid4().int % 1000000:06d}"
    root = _root_with_runsc(tmp_path, None)
    _write_exe(root / "usr/local/bin/runsc", f"#!/bin/sh\nmkdir {leaked}\necho 'creating sandbox: boom' >&2\nexit 1\n")
    try:
        proc = run_cli("verify", "--root", str(root), "--runtime", "gvisor")
        error = assert_known_error(proc)
        assert "gVisor could not start a sandbox" in error and "boom" in error
        assert not leaked.exists()
    finally:
        if leaked.exists():
            leaked.rmdir()


def test_cri_handler_that_is_really_runc_is_not_isolated(containerd_factory):
    """Through CRI: a `kata` handler whose runtime is runc (a stand-in: no Kata VM can run here,
    the VM lacks host-side vsock). The pod starts, but reports the host kernel: verify fails."""
    extra = "\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kata]\n  runtime_type = 'io.containerd.runc.v2'\n"
    daemon = containerd_factory("2.1", lambda work: minimal_config("2.1", work, extra=extra))
    import_test_images(daemon)
    proc = run_cli("verify", "--runtime", "kata", "--containerd-socket", str(daemon.socket),
                   "--image", TEST_IMAGE, "-o", "json")
    error = assert_known_error(proc)
    assert "not isolated" in error
    kata = json.loads(proc.stdout)["runtimes"]["kata"]
    assert kata["method"] == "cri" and kata["handler"] == "kata"
    assert kata["sandbox_kernel"] == HOST_KERNEL and kata["sandbox_ready_after"] < 10
    from nodeagent.containerd.cri import CriClient

    with CriClient(daemon.socket) as client:
        assert client.list_pods() == []  # the probe pod was removed


def test_cri_checks_need_the_handler_and_an_image(containerd_factory):
    daemon = containerd_factory("1.7")
    sock = str(daemon.socket)
    error = assert_known_error(run_cli("verify", "--runtime", "kata", "--containerd-socket", sock, "--image", TEST_IMAGE))
    assert "does not serve a 'kata' handler" in error
    extra = '\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]\n  runtime_type = "io.containerd.runc.v2"\n'
    daemon2 = containerd_factory("1.7", lambda work: minimal_config("1.7", work, extra=extra))
    proc = run_cli("verify", "--runtime", "kata", "--containerd-socket", str(daemon2.socket))
    assert "needs an image" in assert_known_error(proc)
    proc = run_cli("verify", "--runtime", "kata", "--containerd-socket", str(daemon2.socket), "--image", "absent:1")
    assert "image absent:1 is not present" in assert_known_error(proc)


@pytest.mark.root
def test_from_a_daemonset_pod_on_the_node(clean_node):
    """The DaemonSet's view: its own mount and PID namespaces, the node's root as --root
    (NODEAGENT_ROOT), the node's runsc found and run from there."""
    repo = str(Path(__file__).resolve().parents[2])
    proc = clean_node.run_pod([sys.executable, "-m", "nodeagent", "verify", "--runtime", "gvisor", "-o", "json"],
                              env={"PYTHONPATH": repo, "NODEAGENT_LOG_FORMAT": "json"}, check=False)
    assert proc.returncode == 0, proc.stderr
    gvisor = json.loads(proc.stdout)["runtimes"]["gvisor"]
    assert gvisor["ok"] and gvisor["sandbox_kernel"] == "4.4.0" and gvisor["host_kernel"] == HOST_KERNEL
    assert gvisor["runsc"] == "/proc/1/fd/9/usr/bin/runsc"


def _runsc_processes() -> set[int]:
    import psutil

    return {p.pid for p in psutil.process_iter(["cmdline"])
            if any("nodeagent-measure-" in a for a in (p.info["cmdline"] or []))}


@pytest.mark.parametrize("runsc", [RUNSC_2022, RUNSC_2024], ids=["runsc-2022", "runsc-2024"])
def test_measure_gvisor_with_real_runsc(tmp_path, runsc):
    """Real gVisor sandboxes: Sentry and Gofer found and measured, a recommendation derived from
    the numbers, the report written, and no sandbox left behind."""
    if not runsc.exists():
        pytest.skip(f"{runsc} is not installed (run scripts/setup-test-env)")
    root = _root_with_runsc(tmp_path, runsc)
    out = tmp_path / "measured.json"
    others = _runsc_processes()  # another test run's sandboxes on this machine are not ours to judge
    proc = run_cli("--root", str(root), "-o", "json", "verify", "--runtime", "gvisor", "--measure", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == data
    m = data["measure"]["gvisor"]
    assert m["method"] == "runsc-do" and m["sandboxes"] == 2 and not m["skipped"]
    for sandbox in m["per_sandbox"]:
        names = [p["name"] for p in sandbox["processes"]]
        assert "runsc-sandbox" in names and "runsc-gofer" in names, names  # Sentry and Gofer
        assert 4 << 20 < sandbox["rss"] < 1 << 30 and 0 < sandbox["pss"] <= sandbox["rss"]
        assert sandbox["rss"] == sum(p["rss"] for p in sandbox["processes"])
    # the recommendation follows from the numbers: worst RSS + 20 %, rounded up to Mi
    worst = max(s["rss"] for s in m["per_sandbox"])
    assert m["recommended"]["memory"] == f"{math.ceil(worst * 1.2 / (1 << 20))}Mi"
    assert m["recommended"]["cpu"].endswith("m") and int(m["recommended"]["cpu"][:-1]) >= 10
    assert "largest RSS" in m["recommendation_method"]
    assert _runsc_processes() - others == set()

    text = run_cli("--root", str(root), "verify", "--runtime", "gvisor", "--measure", "1")
    assert text.returncode == 0, text.stderr
    assert "recommended overhead.podFixed: memory" in text.stdout and "measured 1 sandboxes via runsc-do" in text.stdout

    # the report feeds the RuntimeClass
    rc = json.loads(run_cli("-o", "json", "runtimeclasses", "--overhead-from", str(out)).stdout)
    gvisor_rc = next(i for i in rc["items"] if i["handler"] == "runsc")
    assert gvisor_rc["overhead"]["podFixed"] == m["recommended"]


def test_measure_skips_a_runtime_that_is_not_there_and_says_why(tmp_path):
    root = _root_with_runsc(tmp_path, RUNSC_2022)
    proc = run_cli("--root", str(root), "-o", "json", "verify", "--measure", "1")
    data = json.loads(proc.stdout)
    kata = data["measure"]["kata"]
    # no containerd in this root, no KVM or host-side vsock on this machine: both reasons are given
    assert kata["skipped"] and "recommended" not in kata
    assert "no socket at" in kata["reason"] and "kata cannot run on this host" in kata["reason"]
    assert data["measure"]["gvisor"]["sandboxes"] == 1


@pytest.mark.parametrize("count", ["0", "51", "-3", "many"])
def test_measure_count_out_of_range_is_a_usage_error(tmp_path, count):
    root = _root_with_runsc(tmp_path, RUNSC_2022)
    before = snapshot(root)
    others = _runsc_processes()  # another test run's sandboxes on this machine are not ours to judge
    proc = run_cli("--root", str(root), "verify", "--runtime", "gvisor", f"--measure={count}")
    assert_known_error(proc, 64)
    assert diff_snapshots(before, snapshot(root)) == []
    assert _runsc_processes() - others == set()


def test_measure_through_cri_finds_each_sandboxs_shim_processes(containerd_factory):
    """The CRI way (Kata's, and gVisor's with its real shim) on REAL containerd. The runc handler
    stands in for a sandbox runtime: what is measured is its pause process; the plumbing (pods,
    shim lookup by sandbox id, sampling, removal) is the same."""
    from nodeagent.measure_launch import measure_cri, shim_of

    daemon = containerd_factory("2.1")
    import_test_images(daemon)
    m = measure_cri("runc-plumbing", "runc", str(daemon.socket), 2, window=0.5)
    assert m.sandboxes == 2 and all(c.processes for c in m.costs)
    assert all(0 < c.rss < 64 << 20 for c in m.costs)
    data = m.as_dict()
    assert data["handler"] == "runc" and data["recommended"]["memory"].endswith("Mi")
    with CriClient(daemon.socket) as client:
        assert client.list_pods() == []  # the measured pods were removed
    assert shim_of("no-such-sandbox-id") is None


def test_verify_starts_a_sandbox_per_kata_shim_handler_and_reports_each_kernel(containerd_factory):
    """`verify --runtime kata --kata-shims qemu,clh`: one CRI sandbox per handler. Kata VMs cannot
    run here (no vhost-vsock), so every handler is a STAND-IN whose runtime is runc: each pod really
    starts through its own handler and reports a kernel, the host's, so verify says each one is not
    isolated. A shim containerd does not serve is named as such."""
    extra = "".join(f"\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.{h}]\n"
                    "  runtime_type = 'io.containerd.runc.v2'\n" for h in ("kata", "kata-qemu", "kata-clh"))
    daemon = containerd_factory("2.1", lambda work: minimal_config("2.1", work, extra=extra))
    import_test_images(daemon)
    proc = run_cli("verify", "--runtime", "kata", "--kata-shims", "qemu,clh", "--containerd-socket", str(daemon.socket),
                   "--image", TEST_IMAGE, "-o", "json")
    error = assert_known_error(proc)
    assert "kata-qemu: the sandbox reports the host's own kernel" in error and "kata-clh:" in error
    kata = json.loads(proc.stdout)["runtimes"]["kata"]
    assert kata["handler"] == "kata" and kata["sandbox_kernel"] == HOST_KERNEL
    assert sorted(kata["shims"]) == ["kata-clh", "kata-qemu"]
    for handler, check in kata["shims"].items():
        assert check["handler"] == handler and check["method"] == "cri"
        assert check["sandbox_kernel"] == HOST_KERNEL and not check["ok"]
    with CriClient(daemon.socket) as client:
        assert client.list_pods() == []  # every probe pod was removed

    proc = run_cli("verify", "--runtime", "kata", "--kata-shims", "qemu,fc", "--containerd-socket", str(daemon.socket),
                   "--image", TEST_IMAGE, "-o", "json")
    assert "kata-fc: containerd does not serve a 'kata-fc' handler" in assert_known_error(proc)
