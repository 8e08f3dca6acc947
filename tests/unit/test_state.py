"""state: what nodeagent owns on a host, kept private (0600/0700) in the root it manages, and
a corrupt record refused with a hint rather than guessed at."""

from __future__ import annotations

import os
import stat

import pytest

from nodeagent import state
from nodeagent.errors import HostError
from nodeagent.host import HostRoot


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


@pytest.mark.parametrize("raw", [
    b"{not json", b'{"files": {"/x": {"path": "/x", "unknown_field": 1}}}',
    pytest.param(b"[]", marks=pytest.mark.xfail(strict=True, raises=AttributeError,
                                                reason="state.load catches ValueError/TypeError only: valid JSON "
                                                       "that is not an object escapes as a traceback")),
    pytest.param(b'{"files": []}', marks=pytest.mark.xfail(strict=True, raises=AttributeError,
                                                           reason="same: a list where the files object belongs")),
])
def test_a_corrupt_state_is_refused_with_a_hint(tmp_path, raw):
    (tmp_path / "var/lib/nodeagent").mkdir(parents=True)
    (tmp_path / "var/lib/nodeagent/state.json").write_bytes(raw)
    with pytest.raises(HostError, match="state.json is corrupt") as exc:
        state.load(HostRoot(tmp_path))
    assert "move it aside" in exc.value.hint


def test_backups_keep_the_original_bytes_privately_and_name_them_by_path_and_digest(tmp_path):
    host = HostRoot(tmp_path)
    where = state.backup(host, "/etc/containerd/config.toml", b"the operator's bytes\n")
    assert where.startswith("/var/lib/nodeagent/backups/etc__containerd__config.toml.")
    assert where.endswith("." + state.sha256(b"the operator's bytes\n")[:12])
    assert host.read_bytes(where) == b"the operator's bytes\n"
    assert mode(host.path(where)) == 0o600 and mode(tmp_path / "var/lib/nodeagent/backups") == 0o700
    assert state.sha256(None) is None
