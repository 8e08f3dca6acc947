"""Bad input through the real CLI on fake roots: one error: line, one hint: line, exit 2
(3 for a held lock), and the host tree byte-identical afterwards."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from nodeagent import fsutil
from tests.support.cli import assert_known_error, run_cli
from tests.support.scenarios import CORPUS, K3S_DIR, OURS, converge_command, install_containerd
from tests.support.tree import diff_snapshots, snapshot

CONFIG = "/etc/containerd/config.toml"
INSTALL = ("install", "--skip-eligibility")


def make_root(tmp_path, text: str | bytes, series: str | None = None, path: str = CONFIG):
    root = tmp_path / "root"
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True)
    target.write_bytes(text.encode() if isinstance(text, str) else text)
    if series:
        install_containerd(root, series)
    return root


def refused(root, *args, env=None, code=2) -> str:
    before = snapshot(root)
    proc = run_cli("--root", str(root), *INSTALL, *args, env=env)
    message = assert_known_error(proc, code)
    assert diff_snapshots(before, snapshot(root)) == []
    return message


def test_broken_toml(tmp_path):
    root = make_root(tmp_path, 'version = 2\n[plugins."io.containerd.grpc.v1.cri"\n')
    assert "not valid TOML" in refused(root)


def test_version_as_string(tmp_path):
    root = make_root(tmp_path, 'version = "2"\n')
    assert "not an integer" in refused(root)


def test_v2_table_inside_v3_file(tmp_path):
    text = (CORPUS / "eks-nodeadm-nvidia-v3.toml").read_text()
    text += '\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.old]\nruntime_type = "io.containerd.runc.v2"\n'
    root = make_root(tmp_path, text, series="2.1")
    assert "ignores" in refused(root)


def test_conflicting_runsc_needs_force(tmp_path):
    text = (CORPUS / "kind-node-v2.toml").read_text()
    text += '\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\nruntime_type = "io.containerd.runc.v2"\n'
    root = make_root(tmp_path, text)
    proc = run_cli("--root", str(root), *INSTALL)
    assert_known_error(proc)
    assert "--force" in proc.stderr.splitlines()[-1]
    # with --force it is replaced, and uninstall puts the operator's table back byte for byte
    original = (root / CONFIG.lstrip("/")).read_bytes()
    installed = converge_command("install", root, skip_eligibility=True, force=True)
    assert installed.changed and not installed.restart
    assert b"io.containerd.runsc.v1" in (root / CONFIG.lstrip("/")).read_bytes()
    # --force: the in-use check matches host-absolute /opt/nodeagent/... paths, and other tests on
    # this machine run runsc from there inside their systemd nodes; the config restore is the same
    assert converge_command("uninstall", root, force=True).changed
    assert (root / CONFIG.lstrip("/")).read_bytes() == original


def test_k3s_template_without_base_line(tmp_path):
    root = make_root(tmp_path, (OURS / "k3s-rendered-v2.toml").read_bytes(), path=f"{K3S_DIR}/config.toml")
    (root / K3S_DIR.lstrip("/") / "config.toml.tmpl").write_bytes((OURS / "k3s-template-without-base.tmpl").read_bytes())
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/k3s").write_text("#!/bin/sh\n")
    (root / "usr/local/bin/k3s").chmod(0o755)
    assert 'template "base"' in refused(root)


def test_plain_import_pointing_nowhere(tmp_path):
    root = make_root(tmp_path, 'version = 2\nimports = ["/etc/containerd/missing.toml"]\n')
    assert "does not exist" in refused(root)


def test_invalid_handler_name(tmp_path):
    root = make_root(tmp_path, (CORPUS / "kind-node-v2.toml").read_bytes())
    assert "invalid handler name" in refused(root, env={"NODEAGENT_GVISOR_HANDLER": "Not_A_DNS_Label"})


def test_explicit_ineligible_runtime_is_refused(tmp_path):
    root = make_root(tmp_path, (CORPUS / "kind-node-v2.toml").read_bytes())
    before = snapshot(root)
    proc = run_cli("--root", str(root), "install", "--runtime", "kata")
    assert "kata cannot run on this host" in assert_known_error(proc)
    assert diff_snapshots(before, snapshot(root)) == []


def test_lock_held_exits_3(tmp_path):
    root = make_root(tmp_path, (CORPUS / "kind-node-v2.toml").read_bytes())
    (root / "run").mkdir()
    with fsutil.RunLock(root / "run/nodeagent.lock"):
        before = snapshot(root)
        proc = run_cli("--root", str(root), *INSTALL)
        assert_known_error(proc, 3)
        assert diff_snapshots(before, snapshot(root)) == []


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) for a private mount namespace")
def test_read_only_config_file(tmp_path):
    """A read-only bind mount of the config, in a private mount namespace (never the real host)."""
    root = make_root(tmp_path, (CORPUS / "kind-node-v2.toml").read_bytes())
    config = root / CONFIG.lstrip("/")
    before = snapshot(root)
    script = (
        f'mount --bind "{config}" "{config}" && mount -o remount,bind,ro "{config}" && '
        f'exec "{sys.executable}" -m nodeagent --root "{root}" install --skip-eligibility'
    )
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60,
                          env={"NODEAGENT_LOG_FORMAT": "json", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert "read-only" in assert_known_error(proc)
    # refused only while applying, so the lock file exists now (it is the lock itself, on /run)
    assert diff_snapshots(before, snapshot(root)) == ["added run", "added run/nodeagent.lock"]
