"""Processes of a root seen through its own procfs (a DaemonSet pod without hostPID).

A real systemd node (its own PID namespace, its procfs at <root>/proc) stands for the node;
this test process stands for the pod: its own /proc shows the node's processes under other
PIDs, <root>/proc under the node's PIDs — each process must be reported once, with a proc_dir
we can read. Then the same through the node's procfs only (a separate view of a process tree
we are not an ancestor of is what a pod gets; here both views exist, so dedup is what is tested).
"""

import os

import pytest

from nodeagent.artifacts.inuse import pids_using
from nodeagent.detect import procs
from nodeagent.host import HostRoot

pytestmark = pytest.mark.root


def test_node_processes_reported_once_with_readable_proc_dirs(systemd_node):
    host = HostRoot(systemd_node.root)
    found = procs.find(host, ("containerd",))
    assert len(found) == 1
    ctd = found[0]
    assert ctd.exe and ctd.exe.endswith("/containerd")
    assert os.path.exists(f"{ctd.proc_dir}/exe")
    assert "PATH" in ctd.environ()
    # systemd (the node's PID 1) is in the node's root too; nothing from this machine's root is
    assert any(p.name == "systemd" for p in procs.iter_processes(host))
    assert all(os.path.samefile(f"{p.proc_dir}/root", host.root) for p in procs.iter_processes(host))


def test_in_use_sees_processes_whatever_their_root(systemd_node, tmp_path):
    host = HostRoot(systemd_node.root)
    ctd = procs.find(host, ("containerd",))[0]
    bindir = os.path.dirname(ctd.exe)
    assert pids_using(host, bindir)  # the node's containerd runs from there
    assert pids_using(HostRoot(tmp_path), "/opt/nodeagent/gvisor/none") == []
