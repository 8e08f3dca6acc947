"""HostRoot.find_executable: the one lookup of a binary on the host (candidates, then PATH)."""

import os

from nodeagent.host import HostRoot


def _exe(root, host_path, mode=0o755):
    path = root / host_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    os.chmod(path, mode)


def test_candidates_first_then_path_skipping_what_cannot_run(tmp_path):
    _exe(tmp_path, "/usr/bin/containerd")
    _exe(tmp_path, "/var/lib/k0s/bin/containerd", mode=0o644)  # not executable
    (tmp_path / "opt/dir/containerd").mkdir(parents=True)  # a directory of that name
    host = HostRoot(tmp_path)
    assert host.find_executable(["/var/lib/k0s/bin/containerd", "/opt/dir/containerd"], "containerd") == "/usr/bin/containerd"
    _exe(tmp_path, "/var/lib/rancher/bin/containerd")
    assert host.find_executable(["/var/lib/rancher/bin/containerd"], "containerd") == "/var/lib/rancher/bin/containerd"


def test_accept_filters_and_a_link_out_of_the_root_stays_inside(tmp_path):
    _exe(tmp_path, "/usr/local/bin/runsc")
    host = HostRoot(tmp_path)
    assert host.find_executable([], "runsc", accept=lambda p: not p.startswith("/usr/local")) is None
    (tmp_path / "opt").mkdir()
    os.symlink("/bin/sh", tmp_path / "opt/runsc")  # the machine's /bin/sh, which this root does not have
    assert host.find_executable(["/opt/runsc"], "nothing-here") is None
    assert not host.is_executable("/opt/runsc")
