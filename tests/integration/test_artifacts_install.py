"""Install gVisor and Kata from a REAL HTTPS server on 127.0.0.1 into a temp --root.

The server is https (a throwaway CA) so its own checksum files count, as upstream's do; plain
http mirrors need pins (test_mirror_trust.py).

The gVisor releases carry Debian's real runsc (/usr/bin/runsc). containerd-shim-runsc-v1
is not packaged anywhere we can reach, so a copy of containerd-shim-runc-v2 stands in for
it; Kata's shim is a stand-in too (a copy of busybox-static), since Kata VMs cannot run
on this VM (no vhost-vsock).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from nodeagent.artifacts import artifacts_in_use, ensure_artifact, plan_artifact, prune_artifact, remove_artifact
from nodeagent.artifacts.extract import Limits
from nodeagent.errors import ArtifactError, ConflictError, NodeagentError
from nodeagent.host import HostRoot
from nodeagent.settings import Settings
from tests.support import mirror_builder as M
from tests.support.hostile_tar import RELEASE_CASES, hostile_release, refusal_words
from tests.support.http_server import LoopbackServer, shared_tls
from tests.support.tree import diff_snapshots, snapshot

pytestmark = pytest.mark.integration
BUSYBOX = Path("/bin/busybox")


@pytest.fixture(autouse=True)
def _fast_network(monkeypatch):
    monkeypatch.setenv("NODEAGENT_DOWNLOAD_BACKOFF", "0.01")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(shared_tls().ca))


def Mirror(directory) -> LoopbackServer:
    """The mirror under test, served over https with the test CA."""
    return LoopbackServer(directory, tls=shared_tls())


@pytest.fixture(scope="module")
def gvisor_tarball(tmp_path_factory) -> Path:
    """gvisor.tar.bz2 with the real runsc and the stand-in shim, built once (bzip2 is slow)."""
    out = tmp_path_factory.mktemp("gvisor-tarball") / "gvisor.tar.bz2"
    return M.build_tar(out, M.gvisor_members(prefix="./"), "bz2")


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


def settings(root: Path, mirror: str, **kw) -> Settings:
    # Settings built directly do not read NODEAGENT_DOWNLOAD_BACKOFF (settings.load does): set it here
    kw.setdefault("download_backoff", 0.01)
    return Settings(root=str(root), mirror=mirror, download_retries=kw.pop("retries", 3), **kw)


def run_from_root(host: HostRoot, link: str, *args: str) -> str:
    """Run a linked binary: its link is host-absolute, so resolve it inside the root first."""
    real = host.resolve(link)
    return subprocess.run([str(real), *args], capture_output=True, text=True, check=True, timeout=30).stdout


def artifact_gets(srv: LoopbackServer) -> list:
    return [s for s in srv.seen if s.method == "GET" and not s.path.endswith((".sha512", ".sha256"))]


def test_gvisor_tarball_layout_installs_and_runsc_runs(tmp_path, root, gvisor_tarball):
    M.gvisor_tarball_release(tmp_path / "m", "20240729.0", prebuilt=gvisor_tarball)
    host = HostRoot(root)
    with Mirror(tmp_path / "m") as srv:
        st = settings(root, srv.url, gvisor_version="20240729.0")
        assert plan_artifact(host, st, "gvisor", "amd64").action == "download"
        res = ensure_artifact(host, st, "gvisor", "amd64")
        assert (res.action, res.version, res.install_dir) == ("download", "20240729.0", "/opt/nodeagent/gvisor/20240729.0")
        # links are host-absolute (no --root prefix) and point into the versioned dir
        assert os.readlink(root / "usr/local/bin/runsc") == "/opt/nodeagent/gvisor/20240729.0/runsc"
        assert os.readlink(root / "usr/local/bin/containerd-shim-runsc-v1") == "/opt/nodeagent/gvisor/20240729.0/containerd-shim-runsc-v1"
        assert "runsc version" in run_from_root(host, "/usr/local/bin/runsc", "--version")
        assert (root / "opt/nodeagent/gvisor/20240729.0/runsc").read_bytes() == M.REAL_RUNSC.read_bytes()
        # second run: a no-op that downloads nothing and changes nothing
        before, gets = snapshot(root), len(artifact_gets(srv))
        assert plan_artifact(host, st, "gvisor", "amd64").action == "none"
        assert ensure_artifact(host, st, "gvisor", "amd64").action == "none"
        assert len(artifact_gets(srv)) == gets
        assert diff_snapshots(before, snapshot(root)) == []
    assert not list(root.rglob("*.partial")) and not list(root.rglob(".nodeagent-tmp-*"))


def test_gvisor_old_separate_files_layout_and_latest_resolves_to_a_release(tmp_path, root):
    # only the old names exist: the tarball's .sha512 404s and we fall back (gvisor#13718)
    M.gvisor_files_release(tmp_path / "m", "latest")
    host = HostRoot(root)
    with Mirror(tmp_path / "m") as srv:
        res = ensure_artifact(host, settings(root, srv.url), "gvisor", "amd64")
        assert any(s.path.endswith("gvisor.tar.bz2.sha512") for s in srv.seen)
    # Debian's runsc says "runsc version 0.0~20221219.0": `latest` is installed under that release
    assert res.version == "20221219.0" and res.action == "download"
    assert run_from_root(host, "/usr/local/bin/runsc", "--version").startswith("runsc version")


def test_kata_installs_tree_and_links(tmp_path, root):
    M.kata_release(tmp_path / "m", "3.28.0", M.kata_members(BUSYBOX))
    host = HostRoot(root)
    with Mirror(tmp_path / "m") as srv:
        res = ensure_artifact(host, settings(root, srv.url), "kata", "amd64")
    assert res.install_dir == "/opt/nodeagent/kata/3.28.0"
    assert os.readlink(root / "opt/kata") == "/opt/nodeagent/kata/3.28.0"
    assert os.readlink(root / "usr/local/bin/containerd-shim-kata-v2") == "/opt/kata/bin/containerd-shim-kata-v2"
    shim = host.resolve("/usr/local/bin/containerd-shim-kata-v2")
    assert shim == root / "opt/nodeagent/kata/3.28.0/bin/containerd-shim-kata-v2"
    assert os.access(shim, os.X_OK)
    cfg = host.resolve("/opt/kata/share/defaults/kata-containers/configuration.toml")
    assert cfg.read_text().startswith("# stand-in Kata configuration")


def test_cache_hit_with_the_server_stopped(tmp_path, root):
    M.gvisor_files_release(tmp_path / "m", "20221219.0")
    host = HostRoot(root)
    srv = Mirror(tmp_path / "m").start()
    st = settings(root, srv.url, gvisor_version="20221219.0")
    try:
        ensure_artifact(host, st, "gvisor", "amd64")
        remove_artifact(host, "gvisor")  # links and version dir gone, the cache stays
        assert not os.path.lexists(root / "usr/local/bin/runsc")
    finally:
        srv.stop()
    assert plan_artifact(host, st, "gvisor", "amd64").action == "cached"
    res = ensure_artifact(host, st, "gvisor", "amd64")
    assert res.action == "cached"
    assert "runsc version" in run_from_root(host, "/usr/local/bin/runsc", "--version")


def test_resume_after_a_dropped_connection_uses_range(tmp_path, root):
    M.gvisor_files_release(tmp_path / "m", "20221219.0")
    host = HostRoot(root)
    with Mirror(tmp_path / "m") as srv:
        srv.fault("gvisor/20221219.0/x86_64/runsc", drop_after=3_000_000, times=1)
        res = ensure_artifact(host, settings(root, srv.url, gvisor_version="20221219.0"), "gvisor", "amd64")
        ranges = [s.range for s in srv.requests_for("gvisor/20221219.0/x86_64/runsc") if s.method == "GET"]
    assert res.action == "download"
    assert ranges == [None, "bytes=3000000-"]
    assert (root / "opt/nodeagent/gvisor/20221219.0/runsc").read_bytes() == M.REAL_RUNSC.read_bytes()


def test_server_without_range_support_restarts_cleanly(tmp_path, root):
    M.gvisor_files_release(tmp_path / "m", "20221219.0")
    host = HostRoot(root)
    path = "gvisor/20221219.0/x86_64/containerd-shim-runsc-v1"
    with Mirror(tmp_path / "m") as srv:
        srv.range_support = False  # answers 200 with the whole file even when asked for a range
        srv.fault(path, drop_after=1_000_000, times=1)
        ensure_artifact(host, settings(root, srv.url, gvisor_version="20221219.0"), "gvisor", "amd64")
        ranges = [s.range for s in srv.requests_for(path) if s.method == "GET"]
    assert ranges == [None, "bytes=1000000-"]  # asked to resume, got a 200, started over
    assert (root / "opt/nodeagent/gvisor/20221219.0/containerd-shim-runsc-v1").read_bytes() == M.STANDIN_SHIM.read_bytes()


def test_retries_on_500_then_success(tmp_path, root):
    M.kata_release(tmp_path / "m", "3.28.0")
    host = HostRoot(root)
    with Mirror(tmp_path / "m") as srv:
        name = "kata/3.28.0/kata-static-3.28.0-amd64.tar.zst"
        srv.fault(name, status=500, times=2)
        res = ensure_artifact(host, settings(root, srv.url, retries=3), "kata", "amd64")
        gets = [s for s in srv.requests_for(name) if s.method == "GET"]
    assert res.action == "download" and len(gets) == 3


def test_bounded_failure_when_the_server_keeps_failing(tmp_path, root):
    M.kata_release(tmp_path / "m", "3.28.0")
    host = HostRoot(root)
    before = snapshot(root)
    with Mirror(tmp_path / "m") as srv:
        name = "kata/3.28.0/kata-static-3.28.0-amd64.tar.zst"
        srv.fault(name, status=503)
        t0 = time.monotonic()
        with pytest.raises(ArtifactError, match="failed after 3 attempts: HTTP 503") as exc:
            ensure_artifact(host, settings(root, srv.url, retries=2), "kata", "amd64")
        elapsed = time.monotonic() - t0
        gets = [s for s in srv.requests_for(name) if s.method == "GET"]
    assert len(gets) == 3 and elapsed < 5
    assert exc.value.hint
    assert diff_snapshots(before, snapshot(root)) == []


def test_upgrade_keeps_a_version_in_use_until_nothing_runs_from_it(tmp_path, root):
    m = tmp_path / "m"
    M.kata_release(m, "3.10.0", M.kata_members(BUSYBOX))
    M.kata_release(m, "3.28.0", M.kata_members(BUSYBOX))
    host = HostRoot(root)
    with Mirror(m) as srv:
        ensure_artifact(host, settings(root, srv.url, kata_version="3.10.0"), "kata", "amd64")
        old_shim = root / "opt/nodeagent/kata/3.10.0/bin/containerd-shim-kata-v2"
        # a "running shim": busybox's sleep applet executed from the old version's file
        proc = subprocess.Popen(["sleep", "60"], executable=str(old_shim))
        try:
            deadline = time.monotonic() + 5
            while proc.pid not in artifacts_in_use(host, "kata") and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.pid in artifacts_in_use(host, "kata")
            res = ensure_artifact(host, settings(root, srv.url, kata_version="3.28.0"), "kata", "amd64")
            assert res.version == "3.28.0"
            assert res.kept_in_use == {"/opt/nodeagent/kata/3.10.0": [proc.pid]}
            assert old_shim.exists() and os.readlink(root / "opt/kata") == "/opt/nodeagent/kata/3.28.0"
            # going back to the kept version only moves the links
            assert plan_artifact(host, settings(root, srv.url, kata_version="3.10.0"), "kata", "amd64").action == "installed"
            before = snapshot(root)
            with pytest.raises(ArtifactError, match=f"in use by process\\(es\\) {proc.pid}"):
                remove_artifact(host, "kata")
            assert diff_snapshots(before, snapshot(root)) == []
        finally:
            proc.kill()
            proc.wait()
    removed, kept = prune_artifact(host, "kata")
    assert removed == ["/opt/nodeagent/kata/3.10.0"] and kept == {}
    assert sorted(os.listdir(root / "opt/nodeagent/kata")) == ["3.28.0"]


def test_foreign_runsc_is_refused_unless_forced_and_restored_on_remove(tmp_path, root):
    M.gvisor_files_release(tmp_path / "m", "20221219.0")
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/runsc").write_bytes(b"#!/bin/sh\necho someone else's runsc\n")
    host = HostRoot(root)
    before = snapshot(root)
    with Mirror(tmp_path / "m") as srv:
        st = settings(root, srv.url, gvisor_version="20221219.0")
        with pytest.raises(ConflictError) as exc:
            ensure_artifact(host, st, "gvisor", "amd64")
        assert "/usr/local/bin/runsc (a file) already exists" in exc.value.message and "--force" in exc.value.hint
        assert diff_snapshots(before, snapshot(root)) == []
        st.force = True
        ensure_artifact(host, st, "gvisor", "amd64")
    assert os.readlink(root / "usr/local/bin/runsc") == "/opt/nodeagent/gvisor/20221219.0/runsc"
    kept = list((root / "var/lib/nodeagent/replaced/usr/local/bin").iterdir())
    assert len(kept) == 1 and kept[0].read_bytes().startswith(b"#!/bin/sh")
    res = remove_artifact(host, "gvisor")
    assert res.restored == ["/usr/local/bin/runsc"]
    assert (root / "usr/local/bin/runsc").read_bytes() == b"#!/bin/sh\necho someone else's runsc\n"
    assert not (root / "opt/nodeagent").exists()


@pytest.mark.parametrize("case", RELEASE_CASES)
def test_hostile_tarball_with_a_valid_digest_changes_nothing(tmp_path, root, case):
    small = [M.Member("runsc", data=b"#!/bin/sh\n"), M.Member("containerd-shim-runsc-v1", data=b"#!/bin/sh\n")]
    M.gvisor_tarball_release(tmp_path / "m", "20240729.0", hostile_release(small, case))
    host = HostRoot(root)
    before = snapshot(root)
    with Mirror(tmp_path / "m") as srv:
        with pytest.raises(ArtifactError) as exc:
            ensure_artifact(host, settings(root, srv.url, gvisor_version="20240729.0"), "gvisor", "amd64")
    assert exc.value.message.startswith("refusing gvisor.tar.bz2:") and exc.value.hint
    assert refusal_words(case) in exc.value.message
    assert diff_snapshots(before, snapshot(root)) == []  # no cache entry, no temp dir, no partial
    assert not os.path.lexists("/etc/evil")


@pytest.mark.parametrize("case", ["mismatch", "oversized", "not-a-tarball", "ambiguous"])
def test_broken_release_changes_nothing(tmp_path, root, case):
    m = tmp_path / "m"
    limits = Limits()
    if case == "mismatch":
        M.gvisor_files_release(m, "20221219.0")
        (m / "gvisor/20221219.0/x86_64/runsc.sha512").write_text("0" * 128 + "  runsc\n")
    elif case == "oversized":
        M.gvisor_tarball_release(m, "20221219.0", [M.Member("runsc", data=b"x" * 8192), M.Member("containerd-shim-runsc-v1", data=b"y")])
        limits = Limits(max_member=4096)
    elif case == "not-a-tarball":
        d = m / "gvisor/20221219.0/x86_64"
        d.mkdir(parents=True)
        (d / "gvisor.tar.bz2").write_bytes(b"<html>not found</html>\n" * 20)
        M.write_digest(d / "gvisor.tar.bz2", "sha512")
    else:
        M.gvisor_tarball_release(m, "20221219.0", [*M.gvisor_members(BUSYBOX, BUSYBOX), M.Member("extra/runsc", data=b"2")])
    host = HostRoot(root)
    before = snapshot(root)
    with Mirror(m) as srv:
        with pytest.raises(NodeagentError) as exc:
            ensure_artifact(host, settings(root, srv.url, gvisor_version="20221219.0"), "gvisor", "amd64", limits=limits)
    words = {"mismatch": "digest mismatch", "oversized": "larger than 4096", "not-a-tarball": "not a readable tar", "ambiguous": "ambiguous"}
    assert words[case] in exc.value.message and exc.value.hint
    assert diff_snapshots(before, snapshot(root)) == []


def test_directory_and_file_url_mirrors(tmp_path, root):
    M.kata_release(tmp_path / "m", "3.28.0", ext="tar.xz")  # older releases ship .tar.xz
    host = HostRoot(root)
    res = ensure_artifact(host, settings(root, str(tmp_path / "m")), "kata", "amd64")
    assert res.action == "download"
    shutil.rmtree(root)
    root.mkdir()
    res = ensure_artifact(HostRoot(root), settings(root, f"file://{tmp_path / 'm'}"), "kata", "amd64")
    assert os.readlink(root / "opt/kata") == "/opt/nodeagent/kata/3.28.0"


def test_stalled_server_times_out_and_fails_bounded(tmp_path, root):
    M.kata_release(tmp_path / "m", "3.28.0", [*M.kata_members(), M.Member("./opt/kata/blob", data=os.urandom(300_000))])
    host = HostRoot(root)
    before = snapshot(root)
    with Mirror(tmp_path / "m") as srv:
        srv.fault("kata/3.28.0/kata-static-3.28.0-amd64.tar.zst", delay=2.0)  # 64 KiB, then a long pause
        t0 = time.monotonic()
        with pytest.raises(ArtifactError, match="failed after 2 attempts.*timed out"):
            ensure_artifact(host, settings(root, srv.url, retries=1, download_timeout=0.3), "kata", "amd64")
        assert time.monotonic() - t0 < 5
    assert diff_snapshots(before, snapshot(root)) == []


@pytest.mark.parametrize("leftover", ["good-prefix", "garbage-prefix", "longer-than-file"])
def test_partial_left_by_a_killed_run_is_resumed_or_discarded(tmp_path, root, leftover):
    """A SIGKILLed run leaves <cache>/<digest>.partial; the next run resumes it only if it verifies."""
    M.gvisor_files_release(tmp_path / "m", "20221219.0")
    runsc = M.REAL_RUNSC.read_bytes()
    hexval = (tmp_path / "m/gvisor/20221219.0/x86_64/runsc.sha512").read_text().split()[0]
    cache = root / "var/lib/nodeagent/cache"
    cache.mkdir(parents=True)
    prefix = {"good-prefix": runsc[:5_000_000], "garbage-prefix": b"\0" * 5_000_000, "longer-than-file": runsc + b"x" * 10}[leftover]
    (cache / f"{hexval}.partial").write_bytes(prefix)
    host = HostRoot(root)
    with Mirror(tmp_path / "m") as srv:
        ensure_artifact(host, settings(root, srv.url, gvisor_version="20221219.0"), "gvisor", "amd64")
        ranges = [s.range for s in srv.requests_for("gvisor/20221219.0/x86_64/runsc") if s.method == "GET"]
    expected = {
        "good-prefix": ["bytes=5000000-"],  # resumed, verified, done
        "garbage-prefix": ["bytes=5000000-", None],  # resumed, digest mismatch, once more from zero
        "longer-than-file": [f"bytes={len(prefix)}-", None],  # 416, started over
    }[leftover]
    assert ranges == expected
    assert (cache / hexval).read_bytes() == runsc and not (cache / f"{hexval}.partial").exists()
    assert (root / "opt/nodeagent/gvisor/20221219.0/runsc").read_bytes() == runsc


# -- Kata shims (issue 15 item 1) ------------------------------------------------------------
# The shims are stand-ins (busybox; Kata VMs cannot run here, no vhost-vsock): what is real is the
# release layout kata-static 3.x ships (Go shim in bin/, Rust shim in runtime-rs/bin/, one
# configuration per shim) and the links containerd follows.
SHIMS = ["qemu", "clh", "fc", "dragonball", "qemu-runtime-rs"]
GO, RUST = "/opt/kata/bin/containerd-shim-kata-v2", "/opt/kata/runtime-rs/bin/containerd-shim-kata-v2"


def test_kata_shims_get_links_that_resolve_inside_the_release_and_uninstall_restores_the_bytes(tmp_path, root):
    M.kata_release(tmp_path / "m", "3.28.0", M.kata_shims_members(BUSYBOX))
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/someone-elses-tool").write_bytes(b"#!/bin/sh\n")
    host = HostRoot(root)
    before = snapshot(root)
    with Mirror(tmp_path / "m") as srv:
        ensure_artifact(host, settings(root, srv.url, kata_shims=SHIMS), "kata", "amd64")
    release = root / "opt/nodeagent/kata/3.28.0"
    for shim, target in [("qemu", GO), ("clh", GO), ("fc", GO), ("dragonball", RUST), ("qemu-runtime-rs", RUST)]:
        link = f"/usr/local/bin/containerd-shim-kata-{shim}-v2"
        assert os.readlink(host.path(link)) == target, shim
        real = host.resolve(link)
        assert real.is_relative_to(release) and os.access(real, os.X_OK), (shim, real)
    assert host.resolve("/opt/kata/share/defaults/kata-containers/runtime-rs/configuration-dragonball.toml").is_relative_to(release)
    assert host.resolve("/opt/kata/share/defaults/kata-containers/configuration-fc.toml").is_relative_to(release)

    res = remove_artifact(host, "kata")
    assert "/usr/local/bin/containerd-shim-kata-qemu-runtime-rs-v2" in res.removed
    # what stays: the download cache (kept on purpose), the empty /opt the install created, and
    # /usr/local/bin's mtime; no link, file or byte of anything else differs
    changed = [d for d in diff_snapshots(before, snapshot(root))
               if not d.startswith(("added var", "added opt")) or d.startswith("added opt/")]
    assert changed == ["changed usr/local/bin (mtime)"], changed
    assert sorted(os.listdir(root / "opt")) == [] and os.listdir(root / "usr/local/bin") == ["someone-elses-tool"]


def test_changing_kata_shims_adds_and_removes_just_the_difference(tmp_path, root):
    M.kata_release(tmp_path / "m", "3.28.0", M.kata_shims_members(BUSYBOX))
    host = HostRoot(root)
    links = lambda: sorted(n for n in os.listdir(root / "usr/local/bin") if n.startswith("containerd-shim-kata-"))
    with Mirror(tmp_path / "m") as srv:
        ensure_artifact(host, settings(root, srv.url, kata_shims=["qemu", "clh", "fc"]), "kata", "amd64")
        qemu_inode = os.lstat(root / "usr/local/bin/containerd-shim-kata-qemu-v2").st_ino
        st = settings(root, srv.url, kata_shims=["qemu", "dragonball"])
        assert plan_artifact(host, st, "kata", "amd64").action == "installed"  # only links move
        assert ensure_artifact(host, st, "kata", "amd64").action == "installed"
        assert links() == ["containerd-shim-kata-dragonball-v2", "containerd-shim-kata-qemu-v2", "containerd-shim-kata-v2"]
        assert os.lstat(root / "usr/local/bin/containerd-shim-kata-qemu-v2").st_ino == qemu_inode  # untouched
        assert ensure_artifact(host, st, "kata", "amd64").action == "none"
        # the old spelling (kata_extra_handlers) names the same shims
        old = settings(root, srv.url, kata_extra_handlers=["kata-qemu", "kata-dragonball"])
        assert plan_artifact(host, old, "kata", "amd64").action == "none"


def test_a_release_without_a_chosen_shim_is_refused_and_nothing_changes(tmp_path, root):
    """kata_members has no runtime-rs tree (as Kata releases before runtime-rs shipped it)."""
    M.kata_release(tmp_path / "m", "3.28.0", M.kata_members(BUSYBOX))
    host = HostRoot(root)
    before = snapshot(root)
    with Mirror(tmp_path / "m") as srv:
        with pytest.raises(ArtifactError) as exc:
            ensure_artifact(host, settings(root, srv.url, kata_shims=["qemu", "dragonball"]), "kata", "amd64")
    assert "runtime-rs/bin/containerd-shim-kata-v2 (shim dragonball)" in exc.value.message
    assert "runtime-rs/configuration-dragonball.toml" in exc.value.message and exc.value.hint
    assert diff_snapshots(before, snapshot(root)) == []


def test_a_shim_link_someone_else_made_is_refused_unless_forced(tmp_path, root):
    M.kata_release(tmp_path / "m", "3.28.0", M.kata_shims_members(BUSYBOX))
    (root / "usr/local/bin").mkdir(parents=True)
    os.symlink("/somewhere/else/containerd-shim-kata-v2", root / "usr/local/bin/containerd-shim-kata-clh-v2")
    host = HostRoot(root)
    before = snapshot(root)
    with Mirror(tmp_path / "m") as srv:
        with pytest.raises(ConflictError, match="containerd-shim-kata-clh-v2"):
            ensure_artifact(host, settings(root, srv.url, kata_shims=["clh"]), "kata", "amd64")
        assert diff_snapshots(before, snapshot(root)) == []
        ensure_artifact(host, settings(root, srv.url, kata_shims=["qemu"]), "kata", "amd64")
    remove_artifact(host, "kata")  # a link that is not ours stays, even though it names a shim
    assert os.readlink(root / "usr/local/bin/containerd-shim-kata-clh-v2") == "/somewhere/else/containerd-shim-kata-v2"


def _root_with_containerd_2(tmp_path: Path) -> Path:
    from tests.support.scenarios import install_containerd

    root = tmp_path / "cliroot"
    (root / "etc/containerd").mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_bytes(b"version = 3\n")
    install_containerd(root, "2.1")
    return root


def test_cli_install_with_kata_shims_then_uninstall_restores_the_bytes(tmp_path):
    """The CLI end to end on a --root with REAL containerd 2.1 judging the config (no daemon runs):
    the suite's mirror (stand-in shim, see tests/support/mirror.py) ships the Go shim and qemu's
    configuration, so `--kata-shims qemu` installs; uninstall puts every byte back."""
    from tests.support.cli import run_cli

    root = _root_with_containerd_2(tmp_path)
    before = (root / "etc/containerd/config.toml").read_bytes()
    args = ("--root", str(root), "-o", "json", "install", "--runtime", "kata", "--skip-eligibility", "--restart", "none")
    proc = run_cli(*args, "--kata-shims", "kata-qemu")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["handlers"] == ["kata", "kata-qemu"]
    dropin = (root / "etc/containerd/conf.d/90-nodeagent.toml").read_text()
    assert "io.containerd.kata-qemu.v2" in dropin and "configuration-qemu.toml" in dropin
    assert os.readlink(root / "usr/local/bin/containerd-shim-kata-qemu-v2") == GO
    proc = run_cli("--root", str(root), "uninstall", "--runtime", "kata", "--restart", "none")
    assert proc.returncode == 0, proc.stderr
    assert (root / "etc/containerd/config.toml").read_bytes() == before
    assert not (root / "etc/containerd/conf.d/90-nodeagent.toml").exists()
    assert not os.path.lexists(root / "usr/local/bin/containerd-shim-kata-qemu-v2")


def test_cli_rerun_without_a_shim_drops_its_handler_and_link_then_uninstall_restores(tmp_path):
    """A changed shim list changes only the difference, end to end (issue 15 item 1): after
    `--kata-shims qemu`, a re-run without it takes out both the link and the kata-qemu handler
    (the plan says so), state.json forgets it, kata stays; uninstall puts every byte back.
    REAL containerd 2.1 judges each config; the shim is the suite's stand-in (tests/support/mirror.py)."""
    from nodeagent import state as state_mod
    from tests.support.cli import run_cli

    root = _root_with_containerd_2(tmp_path)
    before = (root / "etc/containerd/config.toml").read_bytes()
    args = ("--root", str(root), "-o", "json", "install", "--runtime", "kata", "--skip-eligibility", "--restart", "none")
    proc = run_cli(*args, "--kata-shims", "qemu")
    assert proc.returncode == 0, proc.stderr
    dropin = root / "etc/containerd/conf.d/90-nodeagent.toml"
    assert "kata-qemu" in dropin.read_text()

    plan = run_cli("--root", str(root), "-o", "json", "plan", "--runtime", "kata", "--skip-eligibility")
    assert plan.returncode == 0, plan.stderr
    assert "kata-qemu" in "".join(f["diff"] for f in json.loads(plan.stdout)["files"])
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["handlers"] == ["kata"]
    assert "kata-qemu" not in dropin.read_text() and "io.containerd.kata.v2" in dropin.read_text()
    assert not os.path.lexists(root / "usr/local/bin/containerd-shim-kata-qemu-v2")
    assert state_mod.load(HostRoot(root)).handlers == {"kata": "kata"}

    proc = run_cli("--root", str(root), "uninstall", "--runtime", "kata", "--restart", "none")
    assert proc.returncode == 0, proc.stderr
    assert (root / "etc/containerd/config.toml").read_bytes() == before
    assert not dropin.exists()


def test_cli_install_refuses_a_shim_the_release_lacks_and_changes_nothing(tmp_path):
    from tests.support.cli import assert_known_error, run_cli

    root = _root_with_containerd_2(tmp_path)
    before = snapshot(root)
    proc = run_cli("--root", str(root), "install", "--runtime", "kata", "--skip-eligibility", "--restart", "none",
                   "--kata-shims", "qemu,dragonball")
    error = assert_known_error(proc)
    assert "lacks what the chosen shims need: runtime-rs/bin/containerd-shim-kata-v2 (shim dragonball)" in error
    # only the run lock's trace (/run is a tmpfs; the release is only known inside the lock, as in
    # test_mirror_trust.py): no config, link, release or cache entry changed
    lock = {"added run", "added run/nodeagent.lock", "changed run (mtime)"}
    assert [c for c in diff_snapshots(before, snapshot(root)) if c not in lock] == []
