"""prepare_lock: the units' ExecStartPre makes the lock file root's alone (0600, a regular file,
not a symlink) without taking the lock; a sound lock file is left as it is."""

from __future__ import annotations

import os
import stat

from nodeagent import prepare_lock


def test_creates_a_private_lock_file_and_leaves_a_sound_one_alone(tmp_path, capsys):
    lock = tmp_path / "run/nodeagent.lock"
    old_umask = os.umask(0o022)
    try:
        assert prepare_lock.main([str(lock)]) == 0
    finally:
        os.umask(old_umask)
    st = os.lstat(lock)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert prepare_lock.main([str(lock)]) == 0
    assert os.lstat(lock).st_ino == st.st_ino  # a nodeagent holding it keeps it
    assert capsys.readouterr().err == ""


def test_a_world_readable_file_or_a_symlink_is_replaced_not_followed(tmp_path):
    lock = tmp_path / "nodeagent.lock"
    lock.write_text("")
    lock.chmod(0o644)  # what `touch` under UMask=0022 made
    assert prepare_lock.main([str(lock)]) == 0
    assert stat.S_IMODE(os.lstat(lock).st_mode) == 0o600
    target = tmp_path / "somebody-elses-file"
    target.write_text("keep me\n")
    target.chmod(0o644)
    lock.unlink()
    lock.symlink_to(target)
    assert prepare_lock.main([str(lock)]) == 0
    assert not lock.is_symlink() and stat.S_IMODE(os.lstat(lock).st_mode) == 0o600
    assert target.read_text() == "keep me\n" and stat.S_IMODE(target.stat().st_mode) == 0o644


def test_an_unusable_path_is_one_error_and_one_hint(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    code = prepare_lock.main([str(tmp_path / "file/nodeagent.lock")])  # its parent is a file
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 2 and err[0].startswith("error: ") and err[1].startswith("hint: ")
