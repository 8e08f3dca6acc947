"""fsutil: atomic writes and symlink swaps that leave no temp files, and the run lock."""

import os
import stat

import pytest

from nodeagent import fsutil
from nodeagent.errors import LockHeld


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
