"""detect.systemd: is systemd the running init of the root (sd_booted) and is it installed.

The captured trees all have both; these tests take each signal away."""

import pytest

from nodeagent.detect import systemd
from nodeagent.host import HostRoot
from tests.support.hosttrees import HOSTS


def make(root, *dirs, files=()):
    for d in dirs:
        (root / d).mkdir(parents=True)
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("")
    return HostRoot(root)


def test_booted_and_installed():
    assert systemd.probe(HostRoot(HOSTS / "no-containerd")) == {"running": True, "installed": True}


@pytest.mark.parametrize("binary", ["lib/systemd/systemd", "usr/lib/systemd/systemd"])
def test_installed_but_not_running(tmp_path, binary):
    # e.g. a container image or a host booted with another init: SystemdCgroup and systemctl would fail
    assert systemd.probe(make(tmp_path, files=[binary])) == {"running": False, "installed": True}


def test_running_counts_as_installed(tmp_path):
    # a binary in a place we do not look (/usr/local, a snap) still runs: booted means installed
    assert systemd.probe(make(tmp_path, "run/systemd/system")) == {"running": True, "installed": True}


def test_run_systemd_without_system_is_not_booted(tmp_path):
    # /run/systemd exists on non-systemd hosts too (e.g. logind-only, or left by tmpfiles)
    host = make(tmp_path, "run/systemd/journal", files=["lib/systemd/systemd"])
    assert systemd.probe(host)["running"] is False


def test_a_file_named_system_is_not_booted(tmp_path):
    assert systemd.probe(make(tmp_path, files=["run/systemd/system"]))["running"] is False


def test_nothing(tmp_path):
    assert systemd.probe(HostRoot(tmp_path)) == {"running": False, "installed": False}


def test_relative_symlinked_run_is_followed_inside_the_root(tmp_path):
    # /var/run -> ../run style links are common; a link inside the root is fine
    make(tmp_path, "real-run/systemd/system")
    (tmp_path / "run").symlink_to("real-run")
    assert systemd.probe(HostRoot(tmp_path))["running"] is True


def test_absolute_symlink_out_of_the_root_is_not_booted(tmp_path):
    (tmp_path / "run/systemd").mkdir(parents=True)
    (tmp_path / "run/systemd/system").symlink_to("/tmp")  # in the root: /tmp does not exist
    assert systemd.probe(HostRoot(tmp_path))["running"] is False
