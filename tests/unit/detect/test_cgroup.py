"""detect.cgroup: which cgroup layout a host root shows, from the files under /sys/fs/cgroup."""

import pytest

from nodeagent.detect import cgroup
from nodeagent.host import HostRoot
from tests.support.hosttrees import HOSTS


def tree(root, *entries):
    """Directories (and files, for names with a dot) under <root>/sys/fs/cgroup."""
    base = root / "sys/fs/cgroup"
    base.mkdir(parents=True)
    for entry in entries:
        path = base / entry
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch() if "." in path.name else path.mkdir()
    return HostRoot(root)


def test_unified_is_v2(tmp_path):
    assert cgroup.probe(tree(tmp_path, "cgroup.controllers")) == {"version": 2, "mode": "unified"}


def test_cgroup_controllers_at_the_root_wins_over_v1_looking_directories(tmp_path):
    # cgroup2 has child groups of any name; a "memory" group under a v2 root is no v1 hierarchy
    assert cgroup.probe(tree(tmp_path, "cgroup.controllers", "memory", "cpu")) == {"version": 2, "mode": "unified"}


@pytest.mark.parametrize("controller", ["memory", "cpu", "cpuset", "pids", "devices", "blkio", "freezer"])
def test_any_v1_controller_alone_is_legacy(tmp_path, controller):
    assert cgroup.probe(tree(tmp_path, controller)) == {"version": 1, "mode": "legacy"}


@pytest.mark.parametrize("unified", ["unified/cgroup.controllers", "unified"])
def test_v1_controllers_plus_a_cgroup2_mount_is_hybrid(tmp_path, unified):
    assert cgroup.probe(tree(tmp_path, "memory", "pids", unified)) == {"version": 1, "mode": "hybrid"}


def test_a_unified_mount_without_v1_controllers_is_not_v1(tmp_path):
    # systemd's named "systemd" hierarchy and a unified mount alone say nothing about controllers
    assert cgroup.probe(tree(tmp_path, "systemd", "unified/cgroup.controllers")) == {"version": None, "mode": None}


def test_no_sys_fs_cgroup_is_unknown(tmp_path):
    assert cgroup.probe(HostRoot(tmp_path)) == {"version": None, "mode": None}


def test_captured_hybrid_xen_guest():
    assert cgroup.probe(HostRoot(HOSTS / "vm-no-kvm")) == {"version": 1, "mode": "hybrid"}
