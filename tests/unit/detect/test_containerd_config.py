"""detect.containerd_config: a containerd config read into facts (never an exception), runc's
cgroup driver as containerd decodes it, and the gRPC address.

test_detect_bad_input.py covers broken TOML and a missing import through detect; test_confidential.py
covers snapshotters(). Here: read() on each kind of path, the chain and handlers it collects, and
runc_systemd_cgroup / grpc_address case by case."""

import subprocess
from pathlib import Path

import pytest

from nodeagent.detect import containerd_config
from nodeagent.host import HostRoot
from tests.support.hosttrees import HOSTS

MAIN = "/etc/containerd/config.toml"
V2_RUNC = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\nruntime_type = "io.containerd.runc.v2"\n'


def read(root, text=None, path=MAIN, version=None):
    if text is not None:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return containerd_config.read(HostRoot(root), path, version)


def test_missing_file_is_not_an_error_but_not_ok(tmp_path):
    facts = read(tmp_path)
    assert (facts.exists, facts.error, facts.data, facts.ok) == (False, None, None, False)


def test_unreadable_file_exists_with_an_error(tmp_path):
    (tmp_path / "etc/containerd/config.toml").mkdir(parents=True)  # reading a directory fails even for root
    facts = read(tmp_path)
    assert (facts.exists, facts.error, facts.ok) == (True, "unreadable", False)


def test_absolute_symlink_is_followed_inside_the_root(tmp_path):
    (tmp_path / "opt").mkdir()
    (tmp_path / "opt/real.toml").write_text("version = 3\n")
    (tmp_path / "etc/containerd").mkdir(parents=True)
    (tmp_path / "etc/containerd/config.toml").symlink_to("/opt/real.toml")
    facts = read(tmp_path)
    assert (facts.ok, facts.version) == (True, 3)


def test_no_version_key_is_schema_1(tmp_path):
    facts = read(tmp_path, '[plugins.cri]\nsandbox_image = "pause"\n')
    assert (facts.ok, facts.version, facts.default_runtime) == (True, 1, "runc")


def test_chain_handlers_and_default_runtime_from_a_drop_in(tmp_path):
    read(tmp_path, 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\ndefault_runtime_name = "runsc"\n'
                   '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\nruntime_type = "io.containerd.runsc.v1"\n',
         path="/etc/containerd/conf.d/gvisor.toml")
    facts = read(tmp_path, 'version = 2\nimports = ["/etc/containerd/conf.d/*.toml"]\n' + V2_RUNC.split("\n", 1)[1],
                 version="1.7.24")
    assert facts.ok
    assert [item.path for item in facts.chain] == [MAIN, "/etc/containerd/conf.d/gvisor.toml"]
    # containerd 1.x replaces the CRI plugin's whole table with the drop-in's (containerd#5837): runc is gone
    assert set(facts.handlers) == {"runsc"}
    assert facts.default_runtime == "runsc"


def test_a_broken_import_keeps_the_main_files_facts(tmp_path):
    read(tmp_path, "version = 2\n[plugins\n", path="/etc/containerd/conf.d/bad.toml")
    facts = read(tmp_path, 'version = 2\nimports = ["/etc/containerd/conf.d/bad.toml"]\n')
    assert (facts.exists, facts.version, facts.error) == (True, 2, None)
    assert facts.chain_error and "bad.toml" in facts.chain_error
    assert facts.ok is False and facts.handlers == {}


MISSING_IMPORT = 'version = 3\nimports = ["/etc/containerd/gone.toml"]\n'


def test_a_missing_plain_import_breaks_the_chain_for_containerd_1(tmp_path):
    facts = read(tmp_path, MISSING_IMPORT, version="1.7.24")
    assert facts.chain_error == "/etc/containerd/config.toml imports /etc/containerd/gone.toml, which does not exist"


CONTAINERD_2 = Path("/opt/nodeagent-testenv/containerd-2.1/usr/bin/containerd")


@pytest.mark.skipif(not CONTAINERD_2.exists(), reason="needs containerd 2.1 from scripts/setup-test-env")
def test_real_containerd_2_loads_a_config_with_a_missing_plain_import(tmp_path):
    # the ground truth for the xfail below: containerd 2.1 itself, asked to dump the config
    config = tmp_path / "config.toml"
    config.write_text(f'version = 3\nimports = ["{tmp_path}/gone.toml"]\n')
    out = subprocess.run([str(CONTAINERD_2), "--config", str(config), "config", "dump"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "gone.toml" in out.stdout


def test_a_missing_plain_import_is_skipped_for_containerd_2(tmp_path):
    facts = read(tmp_path, MISSING_IMPORT, version="2.1.9")
    assert facts.chain_error is None and facts.ok


def options(value_line, version=2):
    plugin = '"io.containerd.grpc.v1.cri"' if version == 2 else '"io.containerd.cri.v1.runtime"'
    return (f'version = {version}\n[plugins.{plugin}.containerd.runtimes.runc]\nruntime_type = "io.containerd.runc.v2"\n'
            f'[plugins.{plugin}.containerd.runtimes.runc.options]\n{value_line}\n')


@pytest.mark.parametrize("line, expected", [
    ("SystemdCgroup = true", True), ("SystemdCgroup = false", False), ("BinaryName = 'runc'", None),
    ("systemdCgroup = true", True),  # containerd matches option names case-insensitively
    ('SystemdCgroup = "true"', None),  # a string is no bool
])
def test_runc_systemd_cgroup(tmp_path, line, expected):
    assert containerd_config.runc_systemd_cgroup(read(tmp_path, options(line))) is expected


def test_runc_systemd_cgroup_schema_3(tmp_path):
    facts = read(tmp_path, options("SystemdCgroup = true", version=3), version="2.1.9")
    assert containerd_config.runc_systemd_cgroup(facts) is True


def test_the_default_runtimes_own_options_win_over_runcs(tmp_path):
    text = options("SystemdCgroup = false").replace(
        "version = 2\n", 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\ndefault_runtime_name = "crun"\n'
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]\nSystemdCgroup = true\n')
    assert containerd_config.runc_systemd_cgroup(read(tmp_path, text)) is True


def test_a_default_runtime_without_a_table_falls_back_to_runc(tmp_path):
    text = options("SystemdCgroup = true").replace(
        "version = 2\n", 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\ndefault_runtime_name = "nothere"\n')
    assert containerd_config.runc_systemd_cgroup(read(tmp_path, text)) is True


@pytest.mark.parametrize("text, expected", [
    ("[plugins.cri]\nsystemd_cgroup = true\n", True),  # schema 1's switch for the whole CRI plugin
    ("[plugins.cri]\nsystemd_cgroup = false\n", False),
    ('version = 2\n[plugins.cri]\nsystemd_cgroup = true\n', None),  # not read by schema 2
])
def test_schema_1_legacy_switch(tmp_path, text, expected):
    assert containerd_config.runc_systemd_cgroup(read(tmp_path, text)) is expected


def test_no_config_has_no_cgroup_driver_and_no_address(tmp_path):
    facts = read(tmp_path)
    assert containerd_config.runc_systemd_cgroup(facts) is None
    assert containerd_config.grpc_address(facts) is None


@pytest.mark.parametrize("line, expected", [
    ('address = "/run/custom/containerd.sock"', "/run/custom/containerd.sock"),
    ('address = "${SNAP_COMMON}/run/containerd.sock"', None),  # microk8s' template placeholder
    ('address = ""', None),
    ("address = 5", None),
])
def test_grpc_address(tmp_path, line, expected):
    assert containerd_config.grpc_address(read(tmp_path, f"version = 2\n[grpc]\n{line}\n")) == expected


def test_captured_baremetal_runc_uses_systemd_cgroups():
    facts = containerd_config.read(HostRoot(HOSTS / "baremetal-intel-nested"), MAIN, "1.7.13")
    assert facts.ok and containerd_config.runc_systemd_cgroup(facts) is True
