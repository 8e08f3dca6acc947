"""artifacts.cache: verified artifacts named by digest; a corrupt entry is dropped (and fetched
again), an unchanged one is not hashed again; the release index survives a corrupt file."""

from __future__ import annotations

import hashlib
import os

from nodeagent.artifacts.cache import Cache
from nodeagent.artifacts.digest import Digest
from nodeagent.host import HostRoot

DATA = b"a release tarball\n" * 100


def cache_with(tmp_path, data: bytes = DATA) -> tuple[Cache, Digest]:
    tmp_path.mkdir(exist_ok=True)
    cache = Cache(HostRoot(tmp_path))
    cache.dir.mkdir(parents=True)
    digest = Digest("sha512", hashlib.sha512(DATA).hexdigest())
    cache.path_for(digest).write_bytes(data)
    return cache, digest


def test_a_good_entry_is_a_hit_and_a_corrupt_one_is_dropped(tmp_path):
    cache, digest = cache_with(tmp_path)
    assert cache.has(digest) and cache.verify(digest)
    corrupt, digest = cache_with(tmp_path / "b", DATA.replace(b"tarball", b"TARBALL"))
    assert corrupt.has(digest) and not corrupt.verify(digest)
    assert not corrupt.has(digest) and not corrupt.verify(digest)  # gone: the next install fetches it again
    assert not (corrupt.dir / ".verified" / digest.hex).exists()  # and no stamp vouches for it


def test_a_verified_entry_is_hashed_again_only_after_it_changed(tmp_path):
    cache, digest = cache_with(tmp_path)
    path = cache.path_for(digest)
    assert cache.verify(digest)  # hashed once, stamped
    st = os.stat(path)
    with open(path, "r+b") as fh:  # rewrite in place, same size, then put the mtime back:
        fh.write(b"A")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.verify(digest)  # the stamp still matches, so no hash ran (what stamps.py says it cannot catch)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # any ordinary write moves the mtime
    assert not cache.verify(digest) and not path.exists()


def test_the_release_index_records_looks_up_and_survives_corruption(tmp_path):
    cache, _ = cache_with(tmp_path)
    assert cache.read_index() == {} and cache.index_bytes() is None and cache.lookup("gvisor/latest/amd64") is None
    entry = {"version": "20240729.0", "files": {"gvisor.tar.bz2": "sha512:" + "a" * 128}}
    cache.record("gvisor/latest/amd64", entry)
    assert cache.lookup("gvisor/latest/amd64") == entry
    mtime = os.stat(cache.dir / "releases.json").st_mtime_ns
    cache.record("gvisor/latest/amd64", dict(entry))  # the same entry: not rewritten
    assert os.stat(cache.dir / "releases.json").st_mtime_ns == mtime
    (cache.dir / "releases.json").write_text('["not", "an", "object"]')
    assert cache.read_index() == {} and cache.lookup("gvisor/latest/amd64") is None
    (cache.dir / "releases.json").write_text('{"k": "not an entry"}')
    assert cache.lookup("k") is None
