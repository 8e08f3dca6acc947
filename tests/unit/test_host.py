"""HostRoot: every host path resolved inside the root, read errors kept as facts."""

import os

import pytest

from nodeagent.errors import HostError
from nodeagent.host import HostRoot


def test_hostroot_missing_root_is_known_error(tmp_path):
    with pytest.raises(HostError):
        HostRoot(tmp_path / "missing")


def test_hostroot_resolves_absolute_links_inside_root(tmp_path):
    (tmp_path / "opt/nodeagent/gvisor/1").mkdir(parents=True)
    (tmp_path / "opt/nodeagent/gvisor/1/runsc").write_text("#!/bin/sh\n")
    os.chmod(tmp_path / "opt/nodeagent/gvisor/1/runsc", 0o755)
    (tmp_path / "usr/local/bin").mkdir(parents=True)
    os.symlink("/opt/nodeagent/gvisor/1/runsc", tmp_path / "usr/local/bin/runsc")
    host = HostRoot(tmp_path)
    assert host.resolve("/usr/local/bin/runsc") == tmp_path / "opt/nodeagent/gvisor/1/runsc"
    assert host.which("runsc") == "/usr/local/bin/runsc"
    assert host.which("containerd") is None
    assert host.read_text("/nope") is None


def test_hostroot_keeps_read_errors_as_facts_but_absence_is_not_one(tmp_path):
    """A file that exists but cannot be read is not "missing" (security review M2)."""
    from nodeagent.detect import cpu

    root = tmp_path / "host"
    (root / "proc/sys/kernel/arch").mkdir(parents=True)  # a directory: reading it fails (EISDIR)
    (root / "proc/cpuinfo").write_text("processor : 0\n")
    host = HostRoot(root)
    assert host.read_text("/proc/sys/kernel/missing") is None
    assert host.read_errors == []
    facts = cpu.probe(host)
    assert facts["machine"] is None
    assert host.read_error("/proc/sys/kernel/arch") == "Is a directory (EISDIR)"
    assert "could not read /proc/sys/kernel/arch (Is a directory (EISDIR))" in " ".join(facts["reasons"])
    assert host.unreliable_reads == []  # a fact about the file, not about this process
