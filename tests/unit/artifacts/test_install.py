"""artifacts.install: which links are ours, which version is current or already installed, switching
links (a forced foreign file moved aside and put back), pruning what nothing runs from, and restoring
what --force replaced; on fake roots under tmp_path with gVisor's and Kata's real link sets.
Staging a release from the cache and the CLI around it: tests/integration/test_artifacts_install.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from nodeagent.artifacts import install
from nodeagent.artifacts.digest import Digest
from nodeagent.artifacts.release import ArtifactFile, Release
from nodeagent.errors import ConflictError
from nodeagent.fsutil import TEMP_PREFIX
from nodeagent.host import HostRoot
from nodeagent.journal import Journal
from tests.support.tree import diff_snapshots, snapshot

GV = "/opt/nodeagent/gvisor"
RUNSC, SHIM = "/usr/local/bin/runsc", "/usr/local/bin/containerd-shim-runsc-v1"


def link(tmp_path, path: str, target: str) -> None:
    real = tmp_path / path.lstrip("/")
    real.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, real)


def write(tmp_path, path: str, text: str = "x") -> None:
    real = tmp_path / path.lstrip("/")
    real.parent.mkdir(parents=True, exist_ok=True)
    real.write_text(text)


def release(hexchar: str = "a", arch: str = "amd64") -> Release:
    return Release("gvisor", "20240101", arch, "plain", (
        ArtifactFile("runsc", Digest("sha512", hexchar * 128), None),))


def installed(tmp_path, dirname: str, rel: Release | None, marker_text: str | None = None) -> None:
    write(tmp_path, f"{GV}/{dirname}/runsc")
    marker = marker_text if marker_text is not None else json.dumps({"arch": rel.arch, **rel.record()})
    write(tmp_path, f"{GV}/{dirname}/{install.MARKER}", marker)


def test_gvisor_links_point_into_its_version_dir():
    assert install.desired_links("gvisor", "v1") == {RUNSC: f"{GV}/v1/runsc", SHIM: f"{GV}/v1/containerd-shim-runsc-v1"}


def test_only_links_into_our_tree_or_that_the_plugin_claims_are_ours():
    assert install.is_ours("gvisor", RUNSC, f"{GV}/1/runsc")
    assert not install.is_ours("gvisor", RUNSC, f"{GV}-evil/1/runsc")
    assert not install.is_ours("gvisor", RUNSC, GV)
    assert install.is_ours("kata", "/usr/local/bin/containerd-shim-kata-v2", "/opt/kata/bin/containerd-shim-kata-v2")
    assert not install.is_ours("kata", "/usr/local/bin/containerd-shim-kata-v2", "/usr/bin/containerd-shim-kata-v2")


def test_foreign_files_and_links_are_refused_with_what_they_are_and_nothing_changes(tmp_path):
    host = HostRoot(tmp_path)
    assert install.refuse_foreign(host, "gvisor", force=False) == []
    link(tmp_path, RUNSC, "/usr/bin/runsc")
    (tmp_path / SHIM.lstrip("/")).mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(ConflictError) as err:
        install.refuse_foreign(host, "gvisor", force=False)
    assert err.value.message == (f"{RUNSC} (a symlink to /usr/bin/runsc), {SHIM} (a directory) already exists "
                                 "and was not installed by nodeagent")
    assert "--force" in err.value.hint and install.REPLACED in err.value.hint
    assert diff_snapshots(before, snapshot(tmp_path)) == []
    assert install.refuse_foreign(host, "gvisor", force=True) == [RUNSC, SHIM]


def test_our_own_links_even_dangling_are_not_foreign(tmp_path):
    link(tmp_path, RUNSC, f"{GV}/gone/runsc")
    write(tmp_path, SHIM, "a file")
    assert install.foreign_links(HostRoot(tmp_path), "gvisor") == [SHIM]


@pytest.mark.parametrize(("target", "current"), [
    (f"{GV}/20240101/runsc", "20240101"), (f"{GV}/v1", "v1"), (f"{GV}/", None), ("/usr/bin/runsc", None),
    (f"{GV}x/1/runsc", None),
])
def test_the_current_version_is_where_the_first_link_points_inside_our_tree(tmp_path, target, current):
    link(tmp_path, RUNSC, target)
    assert install.current_dirname(HostRoot(tmp_path), "gvisor") == current


def test_no_current_version_without_a_link(tmp_path):
    write(tmp_path, RUNSC)
    assert install.current_dirname(HostRoot(tmp_path), "gvisor") is None
    assert install.installed_dirnames(HostRoot(tmp_path), "gvisor") == []


def test_an_installed_release_is_found_by_digests_and_arch_preferring_the_current_one(tmp_path):
    host = HostRoot(tmp_path)
    want = release("a")
    installed(tmp_path, "a-other-arch", release("a", arch="arm64"))
    installed(tmp_path, "b-other-bytes", release("b"))
    installed(tmp_path, "c-broken", None, marker_text="{not json")
    (tmp_path / GV.lstrip("/") / f"{TEMP_PREFIX}x").mkdir()
    assert install.find_installed(host, want) is None
    installed(tmp_path, "d-same", want)
    installed(tmp_path, "z-same-current", want)
    assert install.find_installed(host, want) == "d-same"
    link(tmp_path, RUNSC, f"{GV}/z-same-current/runsc")
    assert install.find_installed(host, want) == "z-same-current"
    assert ".nodeagent-tmp-x" not in install.installed_dirnames(host, "gvisor")


def test_switching_links_moves_a_forced_foreign_file_aside_and_a_rollback_puts_everything_back(tmp_path):
    host = HostRoot(tmp_path)
    write(tmp_path, RUNSC, "someone else's runsc")
    link(tmp_path, SHIM, f"{GV}/old/containerd-shim-runsc-v1")
    before = snapshot(tmp_path, metadata=False)
    foreign = install.refuse_foreign(host, "gvisor", force=True)
    journal = Journal()
    install.switch_links(host, "gvisor", "new", foreign, journal)
    assert install.links_point_at(host, "gvisor", "new")
    assert not install.links_point_at(host, "gvisor", "old")
    backups = list((tmp_path / install.REPLACED.lstrip("/") / "usr/local/bin").iterdir())
    assert [b.read_text() for b in backups] == ["someone else's runsc"] and backups[0].name.startswith("runsc.")
    journal.rollback()
    assert diff_snapshots(before, snapshot(tmp_path, metadata=False)) == []  # links are re-made: new inodes


def test_kata_links_an_option_no_longer_wants_are_retired_and_come_back_on_rollback(tmp_path):
    host = HostRoot(tmp_path)
    every = install.all_links("kata", "v1")
    for path, target in every.items():
        link(tmp_path, path, target)
    wanted = install.desired_links("kata", "v1")
    retired = install.retired_links(host, "kata", wanted)
    assert retired and set(retired) == set(every) - set(wanted)
    assert not install.links_point_at(host, "kata", "v1"), "a retired link still in place means not done"
    before = snapshot(tmp_path, metadata=False)
    journal = Journal()
    install.switch_links(host, "kata", "v1", [], journal)
    assert install.links_point_at(host, "kata", "v1")
    assert not any(os.path.lexists(tmp_path / r.lstrip("/")) for r in retired)
    journal.rollback()
    assert diff_snapshots(before, snapshot(tmp_path, metadata=False)) == []  # links are re-made: new inodes


@pytest.mark.skipif(shutil.which("sleep") is None, reason="needs sleep to run from a version directory")
def test_prune_keeps_the_current_and_running_versions_and_sweeps_crash_leftovers(tmp_path):
    host = HostRoot(tmp_path)
    for name in ("current", "running", "idle", ".hidden"):
        write(tmp_path, f"{GV}/{name}/runsc")
    (tmp_path / GV.lstrip("/") / f"{TEMP_PREFIX}crashed").mkdir()
    link(tmp_path, RUNSC, f"{GV}/current/runsc")
    sleeper = tmp_path / GV.lstrip("/") / "running/sleep"
    shutil.copy(shutil.which("sleep"), sleeper)
    proc = subprocess.Popen([str(sleeper), "60"])
    try:
        removed, kept = install.prune(host, "gvisor")
    finally:
        proc.kill()
        proc.wait()
    assert removed == [f"{GV}/idle"] and kept == {f"{GV}/running": [proc.pid]}
    assert sorted(os.listdir(tmp_path / GV.lstrip("/"))) == [".hidden", "current", "running"]


def test_restore_replaced_puts_back_the_newest_backup_only_where_nothing_is(tmp_path):
    host = HostRoot(tmp_path)
    assert install.restore_replaced(host, RUNSC) is None
    for stamp in ("20260101T000000", "20260301T000000", "20260201T000000"):
        write(tmp_path, f"{install.REPLACED}{RUNSC}.{stamp}", stamp)
    write(tmp_path, f"{install.REPLACED}/usr/local/bin/runsc-other.20270101T000000", "not runsc's")
    write(tmp_path, RUNSC, "in place")
    assert install.restore_replaced(host, RUNSC) is None
    (tmp_path / RUNSC.lstrip("/")).unlink()
    assert install.restore_replaced(host, RUNSC) == f"{install.REPLACED}{RUNSC}.20260301T000000"
    assert (tmp_path / RUNSC.lstrip("/")).read_text() == "20260301T000000"


def test_remove_tree_leaves_nothing_behind(tmp_path):
    write(tmp_path, "d/v1/a/b")
    install.remove_tree(tmp_path / "d/v1")
    assert os.listdir(tmp_path / "d") == []
