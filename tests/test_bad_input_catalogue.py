"""Hostile or malformed input the product handles that no other test covered yet.

Each case runs the real CLI on a fake root (real containerd 1.6 binary for validation, the
suite's directory mirror) and asserts the error contract and an unchanged root. The run lock
under /run is the one trace allowed when the input is judged after the lock is taken (as in
tests/unit/containerd/test_bad_input.py::test_read_only_config_file). The whole catalogue is
counted with `python3 bench/count_bad_input.py`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.faults import harness
from tests.support.cli import assert_known_error, run_cli
from tests.support.tree import diff_snapshots, snapshot
from tests.unit.containerd.scenarios import have_containerd

pytestmark = pytest.mark.bad_input
INSTALL = ["install", "--runtime", "kata", "--skip-eligibility", "--restart", "none"]
LOCK_TRACE = ["added run", "added run/nodeagent.lock"]


@pytest.fixture(scope="module")
def template():
    if not have_containerd("1.6"):
        pytest.skip("containerd 1.6 is not installed (run scripts/setup-test-env)")
    base = Path(tempfile.mkdtemp(prefix="na-catalogue-"))
    try:
        ref = harness.Reference.build(base, "kata", warm_up=False)
        yield ref.template
    finally:
        shutil.rmtree(base, ignore_errors=True)


def refused(template: Path, tmp_path: Path, args: list[str], config: bytes | None = None,
            allowed: list[str] | None = None) -> str:
    root = tmp_path / "root"
    harness.copy_root(template, root)
    if config is not None:
        (root / harness.CONFIG).write_bytes(config)
    before = snapshot(root)
    message = assert_known_error(run_cli("--root", str(root), *args), 2)
    assert diff_snapshots(before, snapshot(root)) in ([], allowed or [])
    return message


@pytest.mark.parametrize("config, expect", [
    (b"\x00\xff\xfe" * 50, "not UTF-8"),
    ("version = 2\n# caf\xe9\n".encode("latin-1"), "not UTF-8"),
    (b"[plugins]\n[plugins]\n", "not valid TOML"),
], ids=["binary-garbage", "latin-1", "duplicate-table"])
def test_hostile_containerd_config(template, tmp_path, config, expect):
    assert expect in refused(template, tmp_path, INSTALL, config)


def test_deeply_nested_config_is_a_config_error(template, tmp_path):
    """Regression: RecursionError in the parser was reported as 'unexpected ... this is a bug'."""
    config = b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n"
    assert "too deeply" in refused(template, tmp_path, INSTALL, config)


@pytest.mark.parametrize("extra, expect", [
    (["--runtime", "gvisor", "--gvisor-version", "../../../etc"], "invalid gvisor version"),
    (["--kata-version", "../../x"], "invalid kata version"),
    (["--kata-sha256", "zz"], "not a sha256 digest"),
    (["--mirror", "/nonexistent/mirror"], "does not exist"),
    (["--mirror", "ftp://127.0.0.1/x"], "unsupported scheme"),
], ids=["gvisor-version-traversal", "kata-version-traversal", "kata-sha256-not-hex", "mirror-missing",
        "mirror-ftp"])
def test_hostile_install_options(template, tmp_path, extra, expect):
    # refused before the run lock is taken: not even the lock file appears
    assert expect in refused(template, tmp_path, INSTALL + extra)


def test_containerd_config_that_is_a_directory(template, tmp_path):
    """Regression: refused only when the config was written, after the artifacts were installed."""
    message = refused(template, tmp_path, INSTALL + ["--containerd-config", "/etc"], allowed=LOCK_TRACE)
    assert "is a directory" in message
