"""containerd.validate: the REAL containerd of the root's series judges a candidate config with
`config dump` on private copies (imports rewritten to the copies), never the live files, and
only a binary whose whole path is root's own is run."""

from __future__ import annotations

import os

import pytest

from nodeagent.containerd import validate
from nodeagent.errors import ConfigError
from nodeagent.host import HostRoot
from tests.support.scenarios import OURS, have_containerd, install_containerd
from tests.support.tree import diff_snapshots, snapshot

CONFIG = "/etc/containerd/config.toml"
RUNSC_V2 = b'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\nruntime_type = "io.containerd.runsc.v1"\n'


@pytest.fixture
def root(tmp_path):
    if not have_containerd("1.7"):
        pytest.skip("containerd 1.7 is not installed here (scripts/setup-test-env)")
    root = tmp_path / "root"
    (root / "etc/containerd").mkdir(parents=True)
    (root / CONFIG.lstrip("/")).write_bytes((OURS / "default-1.7.toml").read_bytes())
    install_containerd(root, "1.7")
    return root


def test_the_roots_own_containerd_is_found_and_only_if_root_alone_may_change_it(root):
    host = HostRoot(root)
    assert validate.find_containerd(host, "containerd") == str(root / "usr/bin/containerd")
    assert validate.find_containerd(host, "containerd", "/explicit/containerd") == "/explicit/containerd"
    os.chmod(root / "usr/bin", 0o777)  # any user could swap the binary nodeagent would run as root
    try:
        assert validate.find_containerd(host, "containerd") is None
    finally:
        os.chmod(root / "usr/bin", 0o755)
    assert validate.find_containerd(HostRoot(root / "etc"), "containerd") is None  # never one from outside the root


def test_a_good_candidate_is_dumped_with_our_handler_and_the_live_files_stay_untouched(root):
    host = HostRoot(root)
    binary = validate.find_containerd(host, "containerd")
    before = snapshot(root)
    candidate = (root / CONFIG.lstrip("/")).read_bytes() + b"\n" + RUNSC_V2
    runtimes = validate.validate_candidate(host, CONFIG, {CONFIG: candidate}, ["runsc"], binary)
    assert runtimes["runsc"]["runtime_type"] == "io.containerd.runsc.v1" and "runc" in runtimes
    assert diff_snapshots(before, snapshot(root)) == []


def test_imports_are_followed_inside_the_root_through_private_copies(root):
    """The drop-in exists only as a candidate, under the root: containerd still sees it, so the
    imports were rewritten to the copies (and this machine's /etc/containerd was not read)."""
    host = HostRoot(root)
    binary = validate.find_containerd(host, "containerd")
    main = b'version = 2\nimports = ["/etc/containerd/conf.d/*.toml"]\n'
    dropin = b"version = 2\n" + RUNSC_V2
    runtimes = validate.validate_candidate(host, CONFIG, {CONFIG: main, "/etc/containerd/conf.d/90-x.toml": dropin},
                                           ["runsc"], binary)
    assert "runsc" in runtimes
    assert not (root / "etc/containerd/conf.d").exists()


def test_a_candidate_that_would_not_serve_the_handler_is_refused(root):
    host = HostRoot(root)
    binary = validate.find_containerd(host, "containerd")
    # a v2 table in a version 1 file: valid TOML, but containerd looks for handlers elsewhere
    with pytest.raises(ConfigError, match="would not serve handler"):
        validate.validate_candidate(host, CONFIG, {CONFIG: b"version = 1\n" + RUNSC_V2}, ["runsc"], binary)


def test_a_candidate_containerd_rejects_is_refused_with_containerds_own_words(root):
    host = HostRoot(root)
    binary = validate.find_containerd(host, "containerd")
    with pytest.raises(ConfigError, match="containerd rejects the planned config: .*high") as exc:
        validate.validate_candidate(host, CONFIG, {CONFIG: b'version = 2\noom_score = "high"\n'}, [], binary)
    assert "nothing was changed" in exc.value.hint


def test_a_missing_main_file_means_containerds_built_in_defaults(root):
    (root / CONFIG.lstrip("/")).unlink()
    host = HostRoot(root)
    config = validate.effective_config(host, CONFIG, {}, validate.find_containerd(host, "containerd"))
    assert config["version"] == 2 and "runc" in validate.dump_runtimes(config)
