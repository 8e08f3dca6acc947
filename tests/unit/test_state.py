"""state: what nodeagent owns on a host, kept private (0600/0700) in the root it manages, and
a corrupt record refused with a hint rather than guessed at."""

from __future__ import annotations

import os
import stat

import pytest

from nodeagent import state
from nodeagent.errors import HostError
from nodeagent.host import HostRoot
from tests.support.cli import assert_known_error, run_cli
from tests.support.scenarios import CORPUS
from tests.support.tree import diff_snapshots, snapshot


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_saved_state_loads_back_the_same(tmp_path):
    host = HostRoot(tmp_path)
    assert state.load(host) == state.State()  # nothing recorded yet: owns nothing
    record = state.FileRecord("/etc/containerd/config.toml", "config", False, "/var/lib/nodeagent/backups/x",
                              state.sha256(b"ours"), handlers=["runsc"], imports_added=["/etc/containerd/conf.d/*.toml"],
                              replaced={"runsc": {"runtime_type": "io.containerd.runc.v2"}})
    saved = state.State(files={record.path: record}, handlers={"runsc": "gvisor"})
    old_umask = os.umask(0)  # a careless umask must not leak the state
    try:
        state.save(host, saved)
    finally:
        os.umask(old_umask)
    assert state.load(host) == saved
    assert mode(tmp_path / "var/lib/nodeagent/state.json") == 0o600
    assert mode(tmp_path / "var/lib/nodeagent") == 0o700 and mode(tmp_path / "var/lib") == 0o755


GOOD_RECORD = '"path": "/x", "role": "config", "created": true, "backup": null, "written_sha256": null'


@pytest.mark.parametrize("raw", [
    b"{not json", b'{"files": {"/x": {"path": "/x", "unknown_field": 1}}}',
    # valid JSON of the wrong shape: each escaped as an AttributeError/TypeError traceback once
    b"[]", b'"a string"', b'{"files": []}', b'{"files": {"/x": []}}', b'{"files": {"/x": "text"}}',
    b'{"handlers": ["runsc"]}', b'{"handlers": {"runsc": 1}}', b'{"unknown": 1}', b'{"version": 2}',
    b'{"files": {"/x": {"path": "/x"}}}',  # required keys missing
    ('{"files": {"/x": {%s, "handlers": "runsc"}}}' % GOOD_RECORD).encode(),  # a string where a list belongs
    ('{"files": {"/x": {%s, "handlers": [1]}}}' % GOOD_RECORD).encode(),
    ('{"files": {"/x": {%s, "created_dirs": null}}}' % GOOD_RECORD).encode(),
    ('{"files": {"/x": {%s, "replaced": {"runsc": 1}}}}' % GOOD_RECORD).encode(),
    (('{"files": {"/x": {%s}}}' % GOOD_RECORD).replace("true", "1")).encode(),  # an int is no bool
])
def test_a_corrupt_state_is_refused_with_a_hint(tmp_path, raw):
    (tmp_path / "var/lib/nodeagent").mkdir(parents=True)
    (tmp_path / "var/lib/nodeagent/state.json").write_bytes(raw)
    with pytest.raises(HostError, match="state.json is corrupt") as exc:
        state.load(HostRoot(tmp_path))
    assert "move it aside" in exc.value.hint


@pytest.mark.parametrize("command", [("install", "--skip-eligibility"), ("uninstall",)], ids=lambda c: c[0])
@pytest.mark.parametrize("raw", [b"[]", b'{"files": []}', b'{"files": {"/etc/containerd/config.toml": "ours"}}'],
                         ids=["list", "files-list", "record-string"])
def test_the_cli_refuses_a_wrong_shaped_state_and_changes_nothing(tmp_path, command, raw):
    """Through the real CLI: one error and one hint, exit 2, the root byte-identical (no lock
    file either: the state is read before the lock is taken)."""
    root = tmp_path / "root"
    (root / "etc/containerd").mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_bytes((CORPUS / "kind-node-v2.toml").read_bytes())
    (root / "var/lib/nodeagent").mkdir(parents=True)
    (root / "var/lib/nodeagent/state.json").write_bytes(raw)
    before = snapshot(root)
    proc = run_cli("--root", str(root), *command)
    assert "state.json is corrupt" in assert_known_error(proc)
    assert diff_snapshots(before, snapshot(root)) == []


def test_a_minimal_record_loads_with_its_defaults(tmp_path):
    """The checks refuse wrong shapes only: a record with just the required keys is fine."""
    (tmp_path / "var/lib/nodeagent").mkdir(parents=True)
    (tmp_path / "var/lib/nodeagent/state.json").write_text('{"version": 1, "files": {"/x": {%s}}, '
                                                          '"handlers": {"runsc": "gvisor"}}' % GOOD_RECORD)
    loaded = state.load(HostRoot(tmp_path))
    assert loaded == state.State(files={"/x": state.FileRecord("/x", "config", True, None, None)},
                                 handlers={"runsc": "gvisor"})


def test_backups_keep_the_original_bytes_privately_and_name_them_by_path_and_digest(tmp_path):
    host = HostRoot(tmp_path)
    where = state.backup(host, "/etc/containerd/config.toml", b"the operator's bytes\n")
    assert where.startswith("/var/lib/nodeagent/backups/etc__containerd__config.toml.")
    assert where.endswith("." + state.sha256(b"the operator's bytes\n")[:12])
    assert host.read_bytes(where) == b"the operator's bytes\n"
    assert mode(host.path(where)) == 0o600 and mode(tmp_path / "var/lib/nodeagent/backups") == 0o700
    assert state.sha256(None) is None
