"""`verify`: proving a sandbox is real. gVisor with Debian's real runsc (`runsc do`) and with real
scripts standing where runsc is linked (one that runs the command on the host: a "sandbox" that
is not one); CRI against a real containerd 2.x whose handler is runc (a stand-in for a sandbox
runtime: no Kata VM can run on this VM), so the check must call it not isolated.
The CLI around these: tests/unit/commands/test_verify.py and tests/integration/test_verify.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from nodeagent import verify
from nodeagent.host import HostRoot
from tests.support.oci_image import TEST_IMAGE, import_test_images

RUNSC = Path("/usr/bin/runsc")
HOST_KERNEL = os.uname().release
needs_runsc = pytest.mark.skipif(not RUNSC.exists(), reason="Debian's runsc is installed by scripts/setup-test-env")


def exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def fake_runsc(root: Path, body: str, where: str = "usr/local/bin/runsc") -> Path:
    """A runsc that records its flags, then runs `body` with the command after `do` as "$@"."""
    return exe(root / where, f'#!/bin/sh\necho "$@" >> {root}/runsc-argv\n'
                             'while [ "$1" != do ]; do shift; done; shift\n' + body + "\n")


# -- the report and the verdict ------------------------------------------------------------------


def test_as_dict_puts_the_detail_beside_the_verdict():
    check = verify.RuntimeCheck("kata", "cri", ok=True, sandbox_kernel="6.1.0", host_kernel="6.18.0",
                                detail={"handler": "kata", "image": "busybox"}, elapsed=1.23456)
    assert check.as_dict() == {"ok": True, "skipped": False, "method": "cri", "sandbox_kernel": "6.1.0",
                               "host_kernel": "6.18.0", "dmesg": [], "reason": None, "handler": "kata",
                               "image": "busybox", "elapsed": 1.235}


@pytest.mark.parametrize("sandbox, ok, reason", [
    ("4.4.0", True, None),
    (None, False, "the sandbox printed no kernel release"),
    ("", False, "the sandbox printed no kernel release"),
    ("6.18.0", False, "the sandbox reports the host's own kernel 6.18.0: it is not isolated"),
])
def test_judge(sandbox, ok, reason):
    check = verify.judge(verify.RuntimeCheck("gvisor", "runsc-do", sandbox_kernel=sandbox, host_kernel="6.18.0"))
    assert check.ok is ok
    assert (check.reason is None) if reason is None else check.reason.startswith(reason)


def test_judge_keeps_an_earlier_reason():
    check = verify.judge(verify.RuntimeCheck("kata", "cri", reason="the probe container exited 1"))
    assert not check.ok and check.reason == "the probe container exited 1"


def test_the_host_kernel_comes_from_the_roots_proc_else_this_kernel(tmp_path):
    assert verify.host_kernel(HostRoot(tmp_path)) == HOST_KERNEL
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("5.10.0-28-amd64\n")
    assert verify.host_kernel(HostRoot(tmp_path)) == "5.10.0-28-amd64"


# -- finding runsc --------------------------------------------------------------------------------


def test_our_link_wins_over_the_hosts_path(tmp_path):
    exe(tmp_path / "usr/local/sbin/runsc", "#!/bin/sh\n")  # first on PATH, before /usr/local/bin
    assert verify.find_runsc(HostRoot(tmp_path)) == tmp_path / "usr/local/sbin/runsc"
    (tmp_path / "opt/nodeagent/gvisor/1").mkdir(parents=True)
    exe(tmp_path / "opt/nodeagent/gvisor/1/runsc", "#!/bin/sh\n")
    (tmp_path / "usr/local/bin").mkdir(parents=True)
    (tmp_path / "usr/local/bin/runsc").symlink_to("/opt/nodeagent/gvisor/1/runsc")  # absolute: inside the root
    assert verify.find_runsc(HostRoot(tmp_path)) == tmp_path / "opt/nodeagent/gvisor/1/runsc"


def test_a_dangling_or_non_executable_runsc_is_not_found(tmp_path):
    (tmp_path / "usr/local/bin").mkdir(parents=True)
    (tmp_path / "usr/local/bin/runsc").symlink_to("/opt/nodeagent/gvisor/gone/runsc")
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/runsc").write_text("not executable")
    assert verify.find_runsc(HostRoot(tmp_path)) is None
    check = verify.verify_gvisor(HostRoot(tmp_path))
    assert not check.ok and "runsc not found under the host root" in check.reason and check.detail == {}


# -- runsc do ------------------------------------------------------------------------------------


@needs_runsc
def test_a_real_gvisor_sandbox_is_not_the_host(tmp_path):
    (tmp_path / "usr/local/bin").mkdir(parents=True)
    shutil.copy2(RUNSC, tmp_path / "usr/local/bin/runsc")
    check = verify.verify_gvisor(HostRoot(tmp_path), platform="ptrace")
    assert check.ok, check.as_dict()
    assert check.sandbox_kernel != HOST_KERNEL and check.host_kernel == HOST_KERNEL
    assert check.detail == {"runsc": str(tmp_path / "usr/local/bin/runsc"), "platform": "ptrace"}
    assert any("gVisor" in line for line in check.dmesg) and len(check.dmesg) <= 8


def test_runsc_do_uses_a_private_state_dir_no_network_and_removes_it(tmp_path):
    runsc = fake_runsc(tmp_path, 'exec "$@"')
    assert verify.runsc_do(runsc, ["echo", "hi"], platform="kvm").strip() == "hi"
    argv = (tmp_path / "runsc-argv").read_text().split()
    assert argv[0] == "--root" and "--network=none" in argv and "--platform=kvm" in argv
    assert argv[argv.index("do"):] == ["do", "echo", "hi"]
    assert not Path(argv[1]).exists()  # the throw-away state dir is gone


def test_a_runsc_running_on_the_host_is_not_isolated(tmp_path):
    fake_runsc(tmp_path, 'exec "$@"')
    check = verify.verify_gvisor(HostRoot(tmp_path))
    assert not check.ok and check.sandbox_kernel == HOST_KERNEL and "not isolated" in check.reason
    assert "platform" not in check.detail


def test_a_runsc_that_fails_is_reported_with_its_words(tmp_path):
    fake_runsc(tmp_path, 'echo "creating sandbox: boom" >&2; exit 1')
    check = verify.verify_gvisor(HostRoot(tmp_path), timeout=10)
    assert not check.ok and check.reason.startswith("gVisor could not start a sandbox: ") and "boom" in check.reason


def test_a_sandbox_that_prints_nothing_is_not_ok(tmp_path):
    fake_runsc(tmp_path, "exit 0")
    check = verify.verify_gvisor(HostRoot(tmp_path))
    assert not check.ok and check.reason == "the sandbox printed no kernel release"


# -- CRI ----------------------------------------------------------------------------------------


def test_cri_without_containerd(tmp_path):
    check = verify.verify_cri("kata", "kata", str(tmp_path / "c.sock"), TEST_IMAGE, HostRoot(tmp_path), timeout=5)
    assert not check.ok and check.reason.startswith("no sandbox with handler 'kata': ")
    assert check.detail == {"handler": "kata", "image": TEST_IMAGE, "socket": str(tmp_path / "c.sock")}


def test_cri_with_a_runc_handler_is_not_isolated_and_leaves_no_pod(tmp_path, containerd_factory):
    from nodeagent.containerd.cri import CriClient

    daemon = containerd_factory("2.1")
    absent = verify.verify_cri("x", "runc", str(daemon.socket), "absent:1", HostRoot(tmp_path), timeout=30)
    assert not absent.ok and absent.reason.startswith("image absent:1 is not present")
    import_test_images(daemon)
    check = verify.verify_cri("x", "runc", str(daemon.socket), TEST_IMAGE, HostRoot(tmp_path), timeout=30)
    assert not check.ok and check.sandbox_kernel == HOST_KERNEL and "not isolated" in check.reason
    assert "sandbox_ready_after" in check.detail
    with CriClient(daemon.socket) as client:
        assert client.list_pods() == []
    unknown = verify.verify_cri("x", "no-such-handler", str(daemon.socket), TEST_IMAGE, HostRoot(tmp_path), timeout=30)
    assert not unknown.ok and "no-such-handler" in unknown.reason
