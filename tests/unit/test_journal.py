"""The undo journal (nodeagent/journal.py) and the one signal/clean-up handler (error_handler.py),
on real files in a temp dir and with real signals sent to this process."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from nodeagent import error_handler
from nodeagent.journal import Journal
from tests.support.tree import diff_snapshots, snapshot


def _host(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/config.toml").write_bytes(b"version = 2\n")
    os.chmod(tmp_path / "etc/config.toml", 0o640)
    (tmp_path / "bin").mkdir()
    os.symlink("/opt/a/runsc", tmp_path / "bin/runsc")
    return tmp_path


def test_rollback_undoes_writes_links_dirs_and_files_newest_first(tmp_path):
    root = _host(tmp_path)
    os.mkdir(root / "etc/conf.d", 0o750)
    before = snapshot(root, metadata=False)
    journal = Journal()
    journal.write(root / "etc/config.toml", b"version = 2\n# ours\n")
    journal.write(root / "etc/runsc.toml", b"platform = 'systrap'\n", mode=0o644)
    journal.symlink("/opt/b/runsc", root / "bin/runsc")
    journal.symlink("/opt/b/shim", root / "bin/shim")
    journal.mkdirs(root / "opt/b/x")
    (root / "opt/b/x/f").write_bytes(b"new")
    journal.added(root / "opt/b/x/f")
    journal.write(root / "etc/config.toml", None)  # a second change to the same file: undone first
    journal.rmdir(root / "etc/conf.d")  # a retired drop-in directory: made again, mode 0750
    with pytest.raises(OSError):
        journal.rmdir(root / "opt/b")  # not empty: refused, nothing registered
    assert diff_snapshots(before, snapshot(root, metadata=False))
    journal.rollback()
    assert diff_snapshots(before, snapshot(root, metadata=False)) == []
    assert os.readlink(root / "bin/runsc") == "/opt/a/runsc"
    assert (os.stat(root / "etc/config.toml").st_mode & 0o777) == 0o640
    assert len(journal) == 0


def test_commit_keeps_changes_and_only_then_runs_disposals(tmp_path):
    root = _host(tmp_path)
    dropped = []
    journal = Journal()
    journal.symlink("/opt/b/runsc", root / "bin/runsc")
    journal.on_commit(lambda: dropped.append("old tree"))
    assert dropped == []
    journal.commit()
    journal.rollback()  # nothing left to undo
    assert os.readlink(root / "bin/runsc") == "/opt/b/runsc" and dropped == ["old tree"]


def test_a_rollback_never_runs_disposals(tmp_path):
    dropped = []
    journal = Journal()
    journal.on_commit(lambda: dropped.append("old tree"))
    journal.rollback()
    journal.commit()
    assert dropped == []


def test_savepoint_undoes_only_its_own_steps_on_failure(tmp_path):
    root = _host(tmp_path)
    journal = Journal()
    journal.write(root / "etc/config.toml", b"first\n")
    with pytest.raises(RuntimeError):
        with journal.savepoint():
            journal.symlink("/opt/b/runsc", root / "bin/runsc")
            journal.on_commit(lambda: pytest.fail("a failed step's disposal must not run"))
            raise RuntimeError("download failed")
    assert os.readlink(root / "bin/runsc") == "/opt/a/runsc"
    assert (root / "etc/config.toml").read_bytes() == b"first\n"  # the earlier step stays registered
    journal.rollback()
    assert (root / "etc/config.toml").read_bytes() == b"version = 2\n"


def test_a_failing_undo_step_does_not_stop_the_others(tmp_path):
    root = _host(tmp_path)
    journal = Journal()
    journal.write(root / "etc/config.toml", b"ours\n")
    journal.on_rollback(lambda: (_ for _ in ()).throw(OSError("gone")))
    journal.symlink("/opt/b/runsc", root / "bin/runsc")
    journal.rollback()
    assert (root / "etc/config.toml").read_bytes() == b"version = 2\n"
    assert os.readlink(root / "bin/runsc") == "/opt/a/runsc"


def test_context_manager_rolls_back_on_keyboard_interrupt(tmp_path):
    root = _host(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with Journal() as journal:
            journal.symlink("/opt/b/runsc", root / "bin/runsc")
            raise KeyboardInterrupt("signal 15")
    assert os.readlink(root / "bin/runsc") == "/opt/a/runsc"


@pytest.fixture
def sigterm_interrupts():
    old = signal.getsignal(signal.SIGTERM)
    error_handler.interrupt_on_sigterm()
    yield
    signal.signal(signal.SIGTERM, old)


@pytest.fixture
def another_thread():
    """A live thread that does not block signals, as grpc's and an HTTP server's are: the kernel
    may hand it a process-directed SIGTERM (with a mask-only deferral it then must)."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


def test_sigterm_is_held_in_the_critical_section_then_cleans_up(tmp_path, sigterm_interrupts, another_thread):
    """A real SIGTERM sent in the middle of the switch: the section finishes, then the signal
    arrives as KeyboardInterrupt and the handler's clean-up (the rollback) runs."""
    root = _host(tmp_path)
    journal = Journal()
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with error_handler.ErrorHandler(journal.rollback) as guard:
            with guard.deferred():
                journal.symlink("/opt/b/runsc", root / "bin/runsc")
                os.kill(os.getpid(), signal.SIGTERM)
                journal.write(root / "etc/config.toml", b"ours\n")
                finished.append(True)
    assert finished == [True]
    assert os.readlink(root / "bin/runsc") == "/opt/a/runsc"
    assert (root / "etc/config.toml").read_bytes() == b"version = 2\n"


def test_a_sigterm_held_through_the_commit_undoes_nothing(tmp_path, sigterm_interrupts, another_thread):
    """converge's order: the journal is committed before the held section ends, so a SIGTERM
    that arrived while containerd was restarting on the new config cannot roll the files back
    under a containerd that already runs them; it only ends the process."""
    root = _host(tmp_path)
    journal = Journal()
    with pytest.raises(KeyboardInterrupt):
        with error_handler.ErrorHandler(journal.rollback) as guard:
            with guard.deferred():
                journal.symlink("/opt/b/runsc", root / "bin/runsc")
                os.kill(os.getpid(), signal.SIGTERM)
                journal.commit()
    assert os.readlink(root / "bin/runsc") == "/opt/b/runsc"


def test_no_clean_up_when_the_block_succeeds(tmp_path):
    root = _host(tmp_path)
    journal = Journal()
    with error_handler.ErrorHandler(journal.rollback):
        journal.symlink("/opt/b/runsc", root / "bin/runsc")
    assert os.readlink(root / "bin/runsc") == "/opt/b/runsc"
