"""`gvisor=true` only when the handler is registered, served by a REAL containerd's CRI, and its shim
is on containerd's PATH. The shim here is a stand-in file (no real containerd-shim-runsc-v1 can be
had, see shared notes); only its presence on the daemon's PATH is judged, as containerd does."""

import shutil

import pytest

from nodeagent.facts import HostFacts
from nodeagent.detect.containerd import daemon_path
from nodeagent.detect.procs import HostProcess
from nodeagent.host import HostRoot
from nodeagent.kube.labels import desired_labels, infer_state
from nodeagent.kube.runtime_status import handler_names, runtime_status
from nodeagent.settings import Settings
from tests.support.containerd_daemon import minimal_config

pytestmark = pytest.mark.integration

P = "sandbox.nodeagent.io/"
RUNSC = '\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\n  runtime_type = "io.containerd.runsc.v1"\n'
KATA = '\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]\n  runtime_type = "io.containerd.kata.v2"\n'


def facts_for(daemon, version="1.7.24"):
    process = HostProcess(daemon.pid, "containerd", str(daemon.binary), proc_dir=f"/proc/{daemon.pid}")
    return HostFacts.from_json({
        "virtualization": {"kvm_usable": True, "nested": None, "in_vm": True},
        "runtimes": {"gvisor": {"platform": "systrap"}},
        "containerd": {"config_exists": True, "config_path": str(daemon.config_path), "version": version,
                       "socket": str(daemon.socket), "pid": daemon.pid, "binary_dir": str(daemon.bindir),
                       "daemon_path": daemon_path(process, str(daemon.bindir))},
    })


def labels_for(daemon):
    facts = facts_for(daemon)
    status = runtime_status(HostRoot("/"), facts, handler_names(Settings()))
    return status, desired_labels(facts, status, infer_state(status))


def test_gvisor_label_needs_registered_served_and_shim(containerd_factory, tmp_path):
    shims = tmp_path / "shims"
    shims.mkdir()
    shim = shims / "containerd-shim-runsc-v1"
    shutil.copy("/bin/true", shim)
    daemon = containerd_factory("1.7", lambda work: minimal_config("1.7", work, extra=RUNSC), extra_path=[str(shims)])

    status, labels = labels_for(daemon)
    assert status["gvisor"] == {"handler": "runsc", "registered": True, "served": True, "shim_present": True, "reason": None}
    assert labels[P + "gvisor"] == "true" and labels[P + "gvisor-platform"] == "systrap"
    assert labels[P + "state"] == "ready" and P + "kata" not in labels

    shim.unlink()  # shim gone: containerd would fail every gVisor pod
    status, labels = labels_for(daemon)
    assert status["gvisor"]["shim_present"] is False and "not on containerd's PATH" in status["gvisor"]["reason"]
    assert P + "gvisor" not in labels and labels[P + "state"] == "degraded"


def test_registered_but_not_served_until_containerd_restarts(containerd_factory, tmp_path):
    shims = tmp_path / "shims"
    shims.mkdir()
    for name in ("containerd-shim-runsc-v1", "containerd-shim-kata-v2"):
        shutil.copy("/bin/true", shims / name)
    daemon = containerd_factory("1.7", lambda work: minimal_config("1.7", work, extra=RUNSC), extra_path=[str(shims)])
    daemon.write_config(minimal_config("1.7", daemon.work, extra=RUNSC + KATA))  # no restart yet
    status, labels = labels_for(daemon)
    assert status["kata"]["registered"] is True and status["kata"]["served"] is False
    assert "not served by CRI" in status["kata"]["reason"]
    assert P + "kata" not in labels and labels[P + "state"] == "degraded"
    daemon.restart()
    status, labels = labels_for(daemon)
    assert status["kata"]["served"] is True and labels[P + "kata"] == "true" and labels[P + "state"] == "ready"


def test_containerd_down_means_nothing_served(containerd_factory, tmp_path):
    daemon = containerd_factory("1.7", lambda work: minimal_config("1.7", work, extra=RUNSC))
    facts = facts_for(daemon)
    daemon.stop()
    status = runtime_status(HostRoot("/"), facts, handler_names(Settings()), cri_timeout=2)
    assert status["gvisor"]["registered"] is True and status["gvisor"]["served"] is False


def _shim_table(shim: str) -> str:
    return (f'\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-{shim}]\n'
            f'  runtime_type = "io.containerd.kata-{shim}.v2"\n')


def test_a_kata_shim_label_needs_its_own_handler_served_and_its_own_shim(containerd_factory, tmp_path):
    """kata-qemu=true and kata-clh=true each on their own: registered, served by REAL containerd 1.7,
    and that shim's link (a stand-in file) on containerd's PATH. kata=true alone says nothing of them."""
    shims = tmp_path / "shims"
    shims.mkdir()
    for name in ("containerd-shim-kata-v2", "containerd-shim-kata-qemu-v2"):
        shutil.copy("/bin/true", shims / name)
    config = KATA + _shim_table("qemu") + _shim_table("clh")
    daemon = containerd_factory("1.7", lambda work: minimal_config("1.7", work, extra=config), extra_path=[str(shims)])
    facts = facts_for(daemon)
    status = runtime_status(HostRoot("/"), facts, handler_names(Settings(kata_shims=["qemu", "clh", "fc"])))
    labels = desired_labels(facts, status, infer_state(status))
    assert status["kata-qemu"] == {"handler": "kata-qemu", "registered": True, "served": True, "shim_present": True,
                                   "reason": None}
    assert status["kata-clh"]["registered"] and "not on containerd's PATH" in status["kata-clh"]["reason"]
    assert status["kata-fc"]["registered"] is False and "not registered" in status["kata-fc"]["reason"]
    assert labels[P + "kata"] == "true" and labels[P + "kata-qemu"] == "true"
    assert P + "kata-clh" not in labels and P + "kata-fc" not in labels
    assert labels[P + "state"] == "degraded"  # kata-clh is registered but cannot start a pod
    # shims nobody chose get no status and no label
    plain = runtime_status(HostRoot("/"), facts, handler_names(Settings()))
    assert set(plain) == {"gvisor", "kata"}
