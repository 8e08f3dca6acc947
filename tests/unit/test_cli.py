"""Core plumbing: CLI contract, settings precedence, atomic writes, the lock, HostRoot."""

import json
import os
import stat

import pytest

from nodeagent import fsutil, settings
from nodeagent.errors import HostError, LockHeld, UsageError
from nodeagent.host import HostRoot
from tests.support.cli import assert_known_error, run_cli


def test_global_options_before_or_after_command():
    before = run_cli("-o", "json", "version")
    after = run_cli("version", "-o", "json")
    assert before.returncode == after.returncode == 0
    assert json.loads(before.stdout) == json.loads(after.stdout)
    assert json.loads(before.stdout)["nodeagent"]


def test_usage_errors_exit_64_with_hint():
    assert "invalid choice" in assert_known_error(run_cli("frobnicate"), 64)
    assert_known_error(run_cli(), 64)
    assert_known_error(run_cli("version", "-o", "yaml"), 64)


def test_bad_config_file_is_a_known_error(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("output = [unclosed")
    assert "not valid TOML" in assert_known_error(run_cli("--config", str(cfg), "version"), 64)
    cfg.write_text('no_such_setting = 1\n')
    assert "unknown setting" in assert_known_error(run_cli("--config", str(cfg), "version"), 64)
    assert "does not exist" in assert_known_error(run_cli("--config", str(tmp_path / "nope"), "version"), 64)


def test_settings_precedence_flag_env_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('gvisor_version = "20240101"\nkata_version = "3.1.0"\nhealth-timeout = 5\n')
    env = {"NODEAGENT_CONFIG": str(cfg), "NODEAGENT_KATA_VERSION": "3.2.0"}
    s = settings.load({"gvisor_version": None}, env)
    assert (s.gvisor_version, s.kata_version, s.health_timeout) == ("20240101", "3.2.0", 5.0)
    s = settings.load({"kata_version": "3.3.0"}, env)
    assert s.kata_version == "3.3.0"


def test_settings_env_types_and_choices(tmp_path):
    env = {"NODEAGENT_SKIP_ELIGIBILITY": "yes", "NODEAGENT_KATA_EXTRA_HANDLERS": "kata-qemu, kata-clh",
           "NODEAGENT_CONFIG": str(tmp_path / "absent-but-explicit")}
    with pytest.raises(UsageError):
        settings.load({}, env)
    env.pop("NODEAGENT_CONFIG")
    s = settings.load({}, env)
    assert s.skip_eligibility is True and s.kata_extra_handlers == ["kata-qemu", "kata-clh"]
    with pytest.raises(UsageError):
        settings.load({}, {"NODEAGENT_HEALTH_TIMEOUT": "soon"})
    with pytest.raises(UsageError):
        settings.load({}, {"NODEAGENT_RESTART": "reboot"})


def test_node_name_from_downward_api_env():
    assert settings.load({}, {"NODE_NAME": "node-7"}).node_name == "node-7"
    assert settings.load({"node_name": "x"}, {"NODE_NAME": "node-7"}).node_name == "x"


def test_atomic_write_keeps_mode_and_leaves_no_temp(tmp_path):
    target = tmp_path / "config.toml"
    target.write_text("old")
    os.chmod(target, 0o640)
    fsutil.atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_atomic_symlink_swaps_and_is_idempotent(tmp_path):
    link = tmp_path / "bin" / "runsc"
    fsutil.atomic_symlink("/opt/a/runsc", link)
    fsutil.atomic_symlink("/opt/b/runsc", link)
    fsutil.atomic_symlink("/opt/b/runsc", link)
    assert os.readlink(link) == "/opt/b/runsc"
    assert [p.name for p in link.parent.iterdir()] == ["runsc"]


def test_lock_second_holder_gets_exit_3(tmp_path):
    path = tmp_path / "run" / "nodeagent.lock"
    with fsutil.RunLock(path):
        with pytest.raises(LockHeld) as info:
            with fsutil.RunLock(path):
                pass
        assert info.value.exit_code == 3
        assert str(os.getpid()) in info.value.message
    with fsutil.RunLock(path):
        pass


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
