"""Verify once: a verified artifact is staged without a second hash, and unpacked only once.

Real HTTP server on 127.0.0.1, Debian's REAL runsc; containerd-shim-runsc-v1 is a stand-in (a
copy of containerd-shim-runc-v2), as in test_artifacts_install.py. What a second hash or a
second unpack would look like from outside: the installed file is a new inode. What a cache
that trusts a changed file would look like: the tampered bytes installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodeagent.artifacts import ensure_artifact, remove_artifact
from nodeagent.artifacts.cache import Cache
from nodeagent.artifacts.digest import Digest
from nodeagent.errors import ArtifactError
from nodeagent.host import HostRoot
from nodeagent.settings import Settings
from tests.support import mirror_builder as M
from tests.support.http_server import LoopbackServer, shared_tls
from tests.support.tree import diff_snapshots, snapshot

pytestmark = pytest.mark.integration
VERSION = "20221219.0"


@pytest.fixture(autouse=True)
def _fast_network(monkeypatch):
    monkeypatch.setenv("NODEAGENT_DOWNLOAD_BACKOFF", "0.01")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(shared_tls().ca))


def settings(root: Path, mirror: str) -> Settings:
    return Settings(root=str(root), mirror=mirror, download_retries=1, gvisor_version=VERSION)


def runsc_gets(srv: LoopbackServer) -> int:
    return sum(1 for s in srv.seen if s.method == "GET" and s.path.endswith("/runsc"))



def flip_a_byte_keeping_the_size(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        byte = fh.read(1)
        fh.seek(size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert path.stat().st_size == size


@pytest.fixture
def files_mirror(tmp_path) -> Path:
    M.gvisor_files_release(tmp_path / "m", VERSION)
    return tmp_path / "m"


def test_fresh_install_links_the_verified_cache_entry_instead_of_copying_it(tmp_path, files_mirror):
    root = tmp_path / "root"
    root.mkdir()
    host = HostRoot(root)
    with LoopbackServer(files_mirror, tls=shared_tls()) as srv:
        ensure_artifact(host, settings(root, srv.url), "gvisor", "amd64")
    installed = root / f"opt/nodeagent/gvisor/{VERSION}/runsc"
    cache_entry = Cache(host).path_for(Digest("sha512", (files_mirror / f"gvisor/{VERSION}/x86_64/runsc.sha512").read_text().split()[0]))
    # same file system here: the release holds the cache's inode, so no byte was read again
    assert os.stat(installed).st_ino == os.stat(cache_entry).st_ino
    assert installed.read_bytes() == M.REAL_RUNSC.read_bytes()


def test_a_tampered_cache_entry_of_the_same_size_is_hashed_again_and_fetched_again(tmp_path, files_mirror):
    root = tmp_path / "root"
    root.mkdir()
    host = HostRoot(root)
    with LoopbackServer(files_mirror, tls=shared_tls()) as srv:
        ensure_artifact(host, settings(root, srv.url), "gvisor", "amd64")
        remove_artifact(host, "gvisor")  # the cache stays
        entry = Cache(host).path_for(Digest("sha512", (files_mirror / f"gvisor/{VERSION}/x86_64/runsc.sha512").read_text().split()[0]))
        flip_a_byte_keeping_the_size(entry)
        before = runsc_gets(srv)
        res = ensure_artifact(host, settings(root, srv.url), "gvisor", "amd64")
        assert runsc_gets(srv) == before + 1, "the changed entry was trusted instead of fetched again"
    assert res.action == "download"
    assert (root / f"opt/nodeagent/gvisor/{VERSION}/runsc").read_bytes() == M.REAL_RUNSC.read_bytes()


def test_a_tampered_cache_entry_is_refused_when_it_cannot_be_fetched_again(tmp_path, files_mirror):
    root = tmp_path / "root"
    root.mkdir()
    host = HostRoot(root)
    srv = LoopbackServer(files_mirror, tls=shared_tls()).start()
    try:
        ensure_artifact(host, settings(root, srv.url), "gvisor", "amd64")
        remove_artifact(host, "gvisor")
    finally:
        srv.stop()
    entry = Cache(host).path_for(Digest("sha512", (files_mirror / f"gvisor/{VERSION}/x86_64/runsc.sha512").read_text().split()[0]))
    flip_a_byte_keeping_the_size(entry)
    with pytest.raises(ArtifactError):
        ensure_artifact(host, settings(root, srv.url), "gvisor", "amd64")
    assert not os.path.lexists(root / "usr/local/bin/runsc")
    assert not (root / f"opt/nodeagent/gvisor/{VERSION}").exists()


@pytest.fixture
def tarball_mirror(tmp_path) -> Path:
    M.gvisor_tarball_release(tmp_path / "m", VERSION, M.gvisor_members(prefix="./"))
    return tmp_path / "m"


def test_a_reinstall_links_the_kept_unpacked_release_instead_of_unpacking_again(tmp_path, tarball_mirror):
    root = tmp_path / "root"
    root.mkdir()
    host = HostRoot(root)
    installed = root / f"opt/nodeagent/gvisor/{VERSION}/runsc"
    with LoopbackServer(tarball_mirror, tls=shared_tls()) as srv:
        ensure_artifact(host, settings(root, srv.url), "gvisor", "amd64")
        first = os.stat(installed).st_ino
        remove_artifact(host, "gvisor")
        res = ensure_artifact(host, settings(root, srv.url), "gvisor", "amd64")
    assert res.action == "cached"
    assert os.stat(installed).st_ino == first, "the archive was unpacked again"
    assert installed.read_bytes() == M.REAL_RUNSC.read_bytes()
    # and a no-op run after it changes nothing (no new kept tree, no stamp rewritten)
    before = snapshot(root)
    # nothing listens there: a no-op must not need the mirror
    assert ensure_artifact(host, settings(root, "https://127.0.0.1:9"), "gvisor", "amd64").action == "none"
    assert diff_snapshots(before, snapshot(root)) == []


def test_a_changed_kept_tree_is_dropped_and_the_archive_unpacked_again(tmp_path, tarball_mirror):
    root = tmp_path / "root"
    root.mkdir()
    host = HostRoot(root)
    installed = root / f"opt/nodeagent/gvisor/{VERSION}/runsc"
    with LoopbackServer(tarball_mirror, tls=shared_tls()) as srv:
        ensure_artifact(host, settings(root, srv.url), "gvisor", "amd64")
        remove_artifact(host, "gvisor")
        kept = next(Path(Cache(host).dir, "unpacked").glob("gvisor-*/tree/runsc"))
        flip_a_byte_keeping_the_size(kept)  # the only link left to that inode is the kept tree's
        ensure_artifact(host, settings(root, srv.url), "gvisor", "amd64")
    # Not the inode number: the dropped tree's freed inode is often the very one the new unpack
    # gets. The bytes tell: had the changed tree been linked, runsc would carry the flipped byte.
    assert installed.read_bytes() == M.REAL_RUNSC.read_bytes()
    kept_now = next(Path(Cache(host).dir, "unpacked").glob("gvisor-*/tree/runsc"))
    assert kept_now.read_bytes() == M.REAL_RUNSC.read_bytes()  # the changed tree was dropped, a sound one kept
