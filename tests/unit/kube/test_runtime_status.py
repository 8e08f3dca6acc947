"""`kube.runtime_status`: registered in containerd's config, served by CRI, shim on containerd's
PATH, per runtime, and the node labels that follow. Fake roots hold real containerd config files;
"served" is asked of a REAL containerd 2.x whose `kata` handler runs runc (a stand-in: no Kata VM
can run on this VM). The same through the CLI: tests/integration/test_kube_runtime_status.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeagent.facts import ContainerdFacts, HostFacts
from nodeagent.host import HostRoot
from nodeagent.kube.runtime_status import handler_names, node_labels, runtime_status
from nodeagent.settings import Settings
from tests.support.containerd_daemon import minimal_config

CONFIG = "/etc/containerd/config.toml"
HANDLERS = """version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]
  runtime_type = "io.containerd.runsc.v1"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
  runtime_type = "io.containerd.kata.v2"
"""


def root_with(tmp_path: Path, config: str | None, shims: tuple[str, ...] = ()) -> Path:
    if config is not None:
        (tmp_path / "etc/containerd").mkdir(parents=True)
        (tmp_path / "etc/containerd/config.toml").write_text(config)
    for shim in shims:
        path = tmp_path / "usr/local/bin" / shim
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return tmp_path


def facts(config_exists=True, **ctd) -> HostFacts:
    return HostFacts(containerd=ContainerdFacts(config_exists=config_exists, config_path=CONFIG, version="1.7.24", **ctd))


DEFAULT = {"gvisor": "runsc", "kata": "kata"}


def test_handler_names_come_from_the_settings():
    assert handler_names(Settings()) == DEFAULT
    assert handler_names(Settings(gvisor_handler="gv", kata_handler="vm")) == {"gvisor": "gv", "kata": "vm"}


def test_no_config_means_nothing_registered(tmp_path):
    status = runtime_status(HostRoot(tmp_path), facts(config_exists=False), DEFAULT)
    assert status == {rt: {"handler": h, "registered": False, "served": False, "shim_present": False,
                           "reason": "no containerd config"} for rt, h in (("gvisor", "runsc"), ("kata", "kata"))}


def test_registered_with_or_without_a_shim_but_not_served(tmp_path):
    root = root_with(tmp_path, HANDLERS, shims=("containerd-shim-runsc-v1",))
    status = runtime_status(HostRoot(root), facts(), DEFAULT)
    assert status["gvisor"] == {"handler": "runsc", "registered": True, "served": False, "shim_present": True,
                                "reason": f"not served by CRI (no socket at {root}/run/containerd/containerd.sock)"}
    assert status["kata"]["registered"] and not status["kata"]["shim_present"]
    assert status["kata"]["reason"] == "shim for io.containerd.kata.v2 not on containerd's PATH"


def test_the_shim_is_looked_for_on_containerds_path_only(tmp_path):
    root = root_with(tmp_path, HANDLERS, shims=("containerd-shim-runsc-v1",))
    status = runtime_status(HostRoot(root), facts(daemon_path=["/usr/bin"]), DEFAULT)
    assert not status["gvisor"]["shim_present"] and "not on containerd's PATH" in status["gvisor"]["reason"]


def test_each_runtime_is_judged_by_the_handler_it_names(tmp_path):
    root = root_with(tmp_path, HANDLERS)
    status = runtime_status(HostRoot(root), facts(), {"gvisor": "gvisor", "kata": "runc"})
    assert status["gvisor"]["reason"] == "handler 'gvisor' not registered" and not status["gvisor"]["registered"]
    assert status["kata"]["handler"] == "runc" and status["kata"]["registered"]


def test_a_broken_config_says_so(tmp_path):
    root = root_with(tmp_path, "version = 2\n[plugins\n")
    status = runtime_status(HostRoot(root), facts(), DEFAULT)
    assert all(s["reason"].startswith("cannot read containerd's handlers: ") for s in status.values())
    assert not any(s["registered"] for s in status.values())


@pytest.fixture
def served_kata(containerd_factory):
    """A real containerd 2.x serving a `kata` handler whose runtime is runc (stand-in)."""
    extra = "\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kata]\n  runtime_type = 'io.containerd.runc.v2'\n"
    return containerd_factory("2.1", lambda work: minimal_config("2.1", work, extra=extra))


def test_registered_served_and_shim_present_is_ready(served_kata):
    """Read-only on the real root: the daemon's own config file and Debian's runc shim in /usr/bin."""
    f = HostFacts(containerd=ContainerdFacts(
        config_exists=True, config_path=str(served_kata.config_path), version="2.1.9",
        socket=str(served_kata.socket), daemon_path=[str(served_kata.bindir), "/usr/bin"]))
    status = runtime_status(HostRoot("/"), f, DEFAULT)
    assert status["kata"] == {"handler": "kata", "registered": True, "served": True, "shim_present": True, "reason": None}
    assert status["gvisor"]["reason"] == "handler 'runsc' not registered"
    other = runtime_status(HostRoot("/"), f, {"kata": "runc"}, configured_socket=str(served_kata.socket) + ".gone")
    assert other["kata"]["registered"] and not other["kata"]["served"]  # --containerd-socket wins over detection
    labels, runtimes, state = node_labels(Settings(), HostRoot("/"), facts=f)
    assert runtimes == status and state == "ready"
    assert labels["sandbox.nodeagent.io/kata"] == "true" and "sandbox.nodeagent.io/gvisor" not in labels
    labels, _, state = node_labels(Settings(), HostRoot("/"), facts=f, state="installing")
    assert state == "installing" and labels["sandbox.nodeagent.io/state"] == "installing"


def test_a_registered_runtime_that_is_not_ready_degrades_the_node(tmp_path):
    root = root_with(tmp_path, HANDLERS, shims=("containerd-shim-runsc-v1",))
    labels, runtimes, state = node_labels(Settings(label_prefix="x.io/"), HostRoot(root), facts=facts())
    assert state == "degraded" and labels["x.io/state"] == "degraded"
    assert "x.io/gvisor" not in labels and "x.io/kata" not in labels
