"""The one view of what containerd serves, on a temp root: the real config parser and a real
shim file on containerd's PATH; no containerd runs here, so CRI has no socket to answer on
(tests/integration/test_kube_runtime_status.py drives the served side with a real containerd)."""

import os

from nodeagent.containerd.observer import HandlerStatus, observe, search_path
from nodeagent.facts import ContainerdFacts
from nodeagent.host import HostRoot

CONFIG = """version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]
  runtime_type = "io.containerd.runsc.v1"
"""


def _root(tmp_path, with_shim: bool):
    (tmp_path / "etc/containerd").mkdir(parents=True)
    (tmp_path / "etc/containerd/config.toml").write_text(CONFIG)
    (tmp_path / "opt/bin").mkdir(parents=True)
    if with_shim:
        shim = tmp_path / "opt/bin/containerd-shim-runsc-v1"
        shim.write_text("#!/bin/sh\n")
        os.chmod(shim, 0o755)
    facts = ContainerdFacts(found=True, version="1.7.24", config_path="/etc/containerd/config.toml",
                            config_exists=True, daemon_path=["/opt/bin"])
    return HostRoot(tmp_path), facts


def test_registered_with_shim_but_not_served_says_why(tmp_path):
    host, facts = _root(tmp_path, with_shim=True)
    view = observe(host, facts, str(tmp_path / "run/containerd.sock"), cri_timeout=1)
    assert set(view.registered) == {"runc", "runsc"} and view.search == "/opt/bin"
    status = view.status("runsc")
    assert (status.registered, status.shim_present, status.served) == (True, True, False)
    assert status.reason.startswith("not served by CRI (no socket at ")


def test_missing_shim_and_unregistered_handler(tmp_path):
    host, facts = _root(tmp_path, with_shim=False)
    view = observe(host, facts, None)
    assert view.status("runsc") == HandlerStatus("runsc", True, False, False,
                                                 "shim for io.containerd.runsc.v1 not on containerd's PATH")
    assert view.status("kata").reason == "handler 'kata' not registered"


def test_no_config_and_a_broken_config_are_reasons(tmp_path):
    host = HostRoot(tmp_path)
    assert observe(host, ContainerdFacts(), None).status("runsc").reason == "no containerd config"
    (tmp_path / "etc/containerd").mkdir(parents=True)
    (tmp_path / "etc/containerd/config.toml").write_text("version = [")
    broken = ContainerdFacts(config_path="/etc/containerd/config.toml", config_exists=True)
    assert observe(host, broken, None).status("runsc").reason.startswith("cannot read containerd's handlers: ")


def test_search_path_defaults_to_systemds_when_nothing_was_detected():
    assert search_path(ContainerdFacts()).startswith("/usr/local/sbin:")
