"""Hostile release archives through the real CLI: symlink chains, decompression bombs, oversized
downloads (security review L1, L4).

Each case builds its tarball with the suite's tar builder (tests/support/mirror_builder.py),
serves it from a directory mirror or a real HTTP server on 127.0.0.1, and runs
`nodeagent install` on a fake root holding Debian's real containerd 1.6 (it validates the config)
with `--restart none`. Kata's shim is a stand-in (Kata VMs cannot run here; see
tests/support/mirror.py); gVisor's binaries are small stand-in scripts (a pinned version never
runs them). Peak memory is the CLI process's own resident set, sampled and high-water-marked by
tests/support/peak_rss.py, and compared with the DaemonSet's memory limit.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from nodeagent.host import HostRoot
from tests.support import mirror_builder as M
from tests.support import peak_rss
from tests.support.cli import assert_known_error, run_cli
from tests.support.containerd_daemon import minimal_config
from tests.support.http_server import LoopbackServer
from tests.support.scenarios import have_containerd, install_containerd
from tests.support.tree import diff_snapshots, snapshot

pytestmark = pytest.mark.integration

KATA_VERSION = "3.28.0"
KATA_TARBALL = f"kata/{KATA_VERSION}/kata-static-{KATA_VERSION}-amd64"
RELEASE = f"opt/nodeagent/kata/{KATA_VERSION}"
INSTALL_KATA = ("install", "--runtime", "kata", "--skip-eligibility", "--restart", "none")
ENV = {"NODEAGENT_DOWNLOAD_BACKOFF": "0.01", "NODEAGENT_DOWNLOAD_RETRIES": "1", "NO_PROXY": "127.0.0.1,localhost"}
SMALL_GVISOR = [M.Member("./runsc", data=b"#!/bin/sh\necho runsc\n"),
                M.Member("./containerd-shim-runsc-v1", data=b"#!/bin/sh\n")]
GVISOR_VERSION = "20240729.0"


def daemonset_memory_limit() -> int:
    """The memory limit deploy/daemonset.yaml gives the agent container, in bytes."""
    text = (Path(__file__).parents[2] / "deploy/daemonset.yaml").read_text()
    m = re.search(r"limits:[^\n]*\n(?:\s*#[^\n]*\n)*\s*memory:\s*(\d+)Mi", text)
    assert m, "no memory limit found in deploy/daemonset.yaml"
    return int(m.group(1)) << 20


def run_measured(tmp_path: Path, *args: str, env: dict | None = None):
    """Run the CLI; returns (CompletedProcess, peak RSS in bytes of the CLI process)."""
    out = tmp_path / "peak-rss"
    proc = run_cli(*args, env={**ENV, **(env or {})}, timeout=300,
                   prefix=(sys.executable, str(Path(peak_rss.__file__)), str(out)))
    return proc, int(out.read_text())


@pytest.fixture
def root(tmp_path) -> Path:
    """A fake node root: Debian's containerd 1.6 binary and a minimal working config."""
    if not have_containerd("1.6"):
        pytest.skip("containerd 1.6 is not installed (run scripts/setup-test-env)")
    r = tmp_path / "root"
    (r / "etc/containerd").mkdir(parents=True)
    (r / "etc/containerd/config.toml").write_text(minimal_config("1.6", tmp_path / "work"))
    install_containerd(r, "1.6")
    return r


def kata_mirror(base: Path, members: list[M.Member]) -> Path:
    M.kata_release(base, KATA_VERSION, members, ext="tar.zst")
    return base


def escaping_links(root: Path) -> list[str]:
    """Links under the installed releases whose full resolution (readlink -f, with the node's
    absolute paths taken inside the root) leaves their release directory."""
    host, bad = HostRoot(root), []
    opt = root / "opt/nodeagent"
    for release in (p for rt in (opt.iterdir() if opt.is_dir() else []) for p in rt.iterdir()):
        for dirpath, dirnames, filenames in os.walk(release):
            for name in dirnames + filenames:
                link = Path(dirpath) / name
                if link.is_symlink():
                    real = host.resolve(host.to_host(link))
                    if not (real == release or release in real.parents):
                        bad.append(f"{host.to_host(link)} -> {real}")
    return bad


# the run lock is taken before any artifact is fetched; it lives in /run (a tmpfs on a node)
LOCK_TRACE = {"added run", "added run/nodeagent.lock"}


def changes(before: dict, root: Path) -> list[str]:
    return [c for c in diff_snapshots(before, snapshot(root)) if c not in LOCK_TRACE]


def refused(root: Path, mirror: Path | str, *extra: str, env: dict | None = None) -> str:
    """Install must fail with the error contract and leave the root byte-identical."""
    before = snapshot(root)
    proc = run_cli("--root", str(root), *INSTALL_KATA, "--mirror", str(mirror), *extra, env={**ENV, **(env or {})},
                   timeout=300)
    message = assert_known_error(proc, 2)
    assert changes(before, root) == []
    return message


# -- L1: symlink chains ------------------------------------------------------------------------
K = "./opt/kata/"
CHAINS = {
    # each link alone looks inside the archive; followed for real they leave opt/kata
    "climb-by-chain": [M.Member(K + "d/", "dir"), M.Member(K + "d/l1", "symlink", link=".."),
                       M.Member(K + "d/l2", "symlink", link="l1/..")],
    "inside-archive-outside-release": [M.Member(K + "share/etc", "symlink", link="../../etc")],
    "chain-to-the-node-root": [M.Member(K + "up1", "symlink", link=".."), M.Member(K + "up2", "symlink", link="up1/.."),
                               M.Member(K + "up3", "symlink", link="up2/.."), M.Member(K + "up4", "symlink", link="up3/.."),
                               M.Member(K + "bin/etc", "symlink", link="../up4/etc")],
    "absolute-target": [M.Member(K + "bin/passwd", "symlink", link="/etc/passwd")],
    "absolute-into-the-tree-then-up": [M.Member(K + "up", "symlink", link=".."),
                                       M.Member(K + "bin/out", "symlink", link="/opt/kata/up/x")],
    "link-to-link-escaping": [M.Member(K + "a", "symlink", link="b"), M.Member(K + "b", "symlink", link="c/../.."),
                              M.Member(K + "c/", "dir")],
    "loop": [M.Member(K + "x", "symlink", link="y"), M.Member(K + "y", "symlink", link="x")],
}


@pytest.mark.parametrize("case", sorted(CHAINS))
def test_kata_symlink_chains_leaving_the_release_are_refused(tmp_path, root, case):
    mirror = kata_mirror(tmp_path / "mirror", [*M.kata_members(shim=M.STANDIN_SHIM), *CHAINS[case]])
    message = refused(root, mirror)
    assert "symlink" in message and ("outside" in message or "loops" in message), message
    assert escaping_links(root) == [] and not (root / "opt/nodeagent").exists()


def test_an_honest_kata_release_with_relative_and_absolute_links_installs(tmp_path, root):
    links = [M.Member(K + "bin/kata-runtime", data=b"#!/bin/sh\n"),
             M.Member(K + "bin/kata-collect-data.sh", "symlink", link="kata-runtime"),
             M.Member(K + "share/kata-containers/", "dir"),
             M.Member(K + "share/kata-containers/vmlinux-6.1", data=b"kernel", mode=0o644),
             M.Member(K + "share/kata-containers/vmlinux.container", "symlink", link="vmlinux-6.1"),
             M.Member(K + "share/kata-containers/shim", "symlink", link="/opt/kata/bin/containerd-shim-kata-v2"),
             M.Member(K + "share/kata-containers/up-and-back", "symlink", link="../../bin/../share"),
             M.Member(K + "share/kata-containers/not-built-yet", "symlink", link="../../runtime-rs/bin/x")]
    mirror = kata_mirror(tmp_path / "mirror", [*M.kata_members(shim=M.STANDIN_SHIM), *links])
    proc = run_cli("--root", str(root), *INSTALL_KATA, "--mirror", str(mirror), env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert escaping_links(root) == []
    cfg = root / RELEASE / "share/defaults/kata-containers/configuration.toml"
    assert os.readlink(cfg) == "configuration-qemu.toml" and cfg.read_text().startswith("# stand-in")
    assert os.readlink(root / RELEASE / "bin/kata-collect-data.sh") == "kata-runtime"


# -- L4: decompression memory ------------------------------------------------------------------
@pytest.fixture(scope="module")
def xz_bomb(tmp_path_factory) -> Path:
    """A valid Kata tree plus 300 MiB of zeros, compressed to ~50 KB, declaring a 1.5 GiB dictionary."""
    members = [*M.kata_members(), M.Member("./filler", zeros=300 << 20)]
    return M.build_bomb(tmp_path_factory.mktemp("xz-bomb") / "k.tar.xz", members, "xz", xz_dictionary=1536 << 20)


def test_xz_with_a_huge_dictionary_is_refused_within_the_daemonset_memory_limit(tmp_path, root, xz_bomb):
    tarball = tmp_path / "mirror" / f"{KATA_TARBALL}.tar.xz"
    tarball.parent.mkdir(parents=True)
    tarball.write_bytes(xz_bomb.read_bytes())
    M.write_digest(tarball, "sha256")
    assert tarball.stat().st_size < 256 << 10
    before = snapshot(root)
    proc, peak = run_measured(tmp_path, "--root", str(root), *INSTALL_KATA, "--mirror", str(tmp_path / "mirror"))
    print(f"xz 1.5 GiB dictionary ({tarball.stat().st_size} bytes): peak RSS {peak >> 20} MiB")
    message = assert_known_error(proc, 2)
    assert "memory to decompress" in message and "xz dictionary" in message, message
    assert changes(before, root) == []
    assert peak < daemonset_memory_limit(), f"peak RSS {peak >> 20} MiB"


def test_zstd_with_a_huge_window_is_refused_within_the_daemonset_memory_limit(tmp_path, root):
    """libzstd's own default already stops a 2 GiB window; nodeagent sets the cap itself and says why."""
    mirror = tmp_path / "mirror"
    tarball = M.build_bomb(mirror / f"{KATA_TARBALL}.tar.zst", M.kata_members(shim=M.STANDIN_SHIM), "zst",
                           trailing_zeros=16 << 20, zstd_window_log=31)
    M.write_digest(tarball, "sha256")
    before = snapshot(root)
    proc, peak = run_measured(tmp_path, "--root", str(root), *INSTALL_KATA, "--mirror", str(mirror))
    print(f"zstd 2 GiB window: peak RSS {peak >> 20} MiB")
    message = assert_known_error(proc, 2)
    assert "memory to decompress" in message and "zstd window" in message, message
    assert changes(before, root) == []
    assert peak < daemonset_memory_limit()


def test_bzip2_bomb_after_the_tar_end_is_read_in_bounded_memory(tmp_path, root):
    """300 MiB of zeros are ~2 KB of bzip2: an unbounded decompress() expands them in one call (the
    incompressible filler puts them into one of tarfile's 10 KiB reads rather than its first 512 bytes)."""
    mirror = tmp_path / "mirror"
    members = [*SMALL_GVISOR, M.Member("./extra/filler", data=os.urandom(64 << 10), mode=0o644)]
    tarball = M.build_bomb(mirror / f"gvisor/{GVISOR_VERSION}/x86_64/gvisor.tar.bz2", members, "bz2",
                           trailing_zeros=300 << 20)
    M.write_digest(tarball, "sha512")
    proc, peak = run_measured(tmp_path, "--root", str(root), "install", "--runtime", "gvisor", "--skip-eligibility",
                              "--restart", "none", "--gvisor-version", GVISOR_VERSION, "--mirror", str(mirror))
    print(f"bzip2 with 300 MiB of trailing zeros ({tarball.stat().st_size} bytes): peak RSS {peak >> 20} MiB")
    assert proc.returncode == 0, proc.stderr
    assert (root / f"opt/nodeagent/gvisor/{GVISOR_VERSION}/runsc").read_bytes() == SMALL_GVISOR[0].data
    assert peak < daemonset_memory_limit(), f"peak RSS {peak >> 20} MiB"


# -- L4: download size cap ---------------------------------------------------------------------
@pytest.mark.parametrize("length", ["announced", "hidden"])
def test_a_download_over_the_size_cap_is_refused_and_leaves_nothing(tmp_path, root, length):
    mirror = kata_mirror(tmp_path / "mirror", M.kata_members(shim=M.STANDIN_SHIM))
    tarball = mirror / f"{KATA_TARBALL}.tar.zst"
    digest = (mirror / f"{KATA_TARBALL}.tar.zst.sha256").read_text().split()[0]
    cap = tarball.stat().st_size // 2
    with LoopbackServer(mirror) as srv:
        if length == "hidden":  # no Content-Length: the cap must hold while streaming
            srv.fault(f"{KATA_TARBALL}.tar.zst", hide_length=True)
        message = refused(root, srv.url, "--kata-sha256", digest,
                          env={"NODEAGENT_MAX_DOWNLOAD_SIZE": str(cap)})
        gets = [s for s in srv.requests_for(f"{KATA_TARBALL}.tar.zst") if s.method == "GET"]
    assert "larger than the download limit" in message and "max_download_size" in message, message
    assert len(gets) <= 1  # refused, not retried
    assert not (root / "var/lib/nodeagent").exists()


def test_a_mirror_directory_file_over_the_size_cap_is_refused(tmp_path, root):
    mirror = kata_mirror(tmp_path / "mirror", M.kata_members(shim=M.STANDIN_SHIM))
    cap = (mirror / f"{KATA_TARBALL}.tar.zst").stat().st_size - 1
    message = refused(root, mirror, env={"NODEAGENT_MAX_DOWNLOAD_SIZE": str(cap)})
    assert "larger than the download limit" in message, message


# -- L3: modes never depend on the umask ------------------------------------------------------
EXECUTABLES = {"runsc", "containerd-shim-runsc-v1", "containerd-shim-kata-v2"}


def expected_mode(rel: str, is_dir: bool) -> int | None:
    """The mode nodeagent must give a path it created (None: not this test's business)."""
    if rel == "run":
        return 0o755  # the run lock's directory, made by RunLock
    if rel == "run/nodeagent.lock":
        return 0o600  # no other user may open it (issue 11, L2)
    kept = re.match(r"var/lib/nodeagent/cache/unpacked/[^/]+/tree(/|$)", rel)
    if kept:  # a kept unpacked release: hard links of the release's files, so the release's modes
        if is_dir:  # (reachable only through the 0700 cache above it)
            return 0o755
        return 0o755 if Path(rel).name in EXECUTABLES else 0o644
    if rel == "var/lib/nodeagent" or rel.startswith("var/lib/nodeagent/"):
        return 0o700 if is_dir else 0o600  # state, backups, cache: root only
    if is_dir:
        return 0o755
    if rel.startswith("opt/nodeagent/"):
        return 0o755 if Path(rel).name in EXECUTABLES else 0o644
    return 0o644  # new config files (drop-ins, runsc.toml)


def test_a_full_install_under_umask_000_gives_every_created_path_its_own_mode(tmp_path, root):
    (root / "etc/containerd/config.toml").chmod(0o640)  # an operator's unusual mode is kept
    before = snapshot(root, metadata=False)
    old = os.umask(0)  # the CLI child inherits it
    try:
        proc = run_cli("--root", str(root), "install", "--runtime", "all", "--skip-eligibility", "--restart", "none",
                       env=ENV, timeout=300)
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr
    after = snapshot(root, metadata=False)  # (kind, mode, content): modes are the point
    wrong = []
    for rel in sorted(set(after) - set(before)):
        kind, mode, _ = after[rel]
        want = None if kind == "link" else expected_mode(rel, kind == "dir")
        if want is not None and mode != want:
            wrong.append(f"{rel}: {oct(mode)}, want {oct(want)}")
    assert wrong == []
    assert after["etc/containerd/config.toml"][1] == 0o640
    created = set(after) - set(before)
    assert {"var/lib/nodeagent/state.json", "var/lib/nodeagent/cache", f"{RELEASE}/bin/containerd-shim-kata-v2"} <= created
    assert any(r.startswith("var/lib/nodeagent/backups/") for r in created)


def test_a_cache_entry_changed_after_verification_is_never_extracted(tmp_path):
    """The cache is checked (cache.verify) long before the release is extracted from it; the bytes
    extracted must be the bytes that match the digest, so staging hashes what it reads."""
    from nodeagent.artifacts import extract, install
    from nodeagent.artifacts.cache import Cache
    from nodeagent.artifacts.download import Fetcher
    from nodeagent.artifacts.release import resolve
    from nodeagent.journal import Journal
    from nodeagent.errors import ArtifactError

    root = tmp_path / "root"
    root.mkdir()
    mirror = kata_mirror(tmp_path / "mirror", M.kata_members())
    host = HostRoot(root)
    cache = Cache(host)
    release = resolve(Fetcher(), cache, "kata", KATA_VERSION, "amd64", mirror=str(mirror))
    digest = release.files[0].digest
    cache.dir.mkdir(parents=True)
    cache.path_for(digest).write_bytes((mirror / f"{KATA_TARBALL}.tar.zst").read_bytes())
    assert cache.verify(digest)
    # ...then someone swaps the entry for another (well-formed) release before it is used
    swapped = M.build_tar(tmp_path / "swapped.tar.zst", M.kata_members(shim=b"#!/bin/sh\necho swapped\n"), "zst")
    cache.path_for(digest).write_bytes(swapped.read_bytes())
    before = snapshot(root)
    assert "opt" not in before
    with pytest.raises(ArtifactError) as exc:
        with Journal() as journal:
            install.stage(host, release, cache, journal, extract.Limits())
    assert "changed after it was verified" in exc.value.message and exc.value.hint
    assert diff_snapshots(before, snapshot(root)) == []


def test_bundle_refuses_a_kata_tarball_whose_links_chain_out(tmp_path):
    """`bundle` checks archives without extracting them: the same walk over the scanned members."""
    mirror = kata_mirror(tmp_path / "mirror", [*M.kata_members(), *CHAINS["climb-by-chain"]])
    root, out = tmp_path / "root", tmp_path / "bundle"
    root.mkdir()
    out.mkdir()
    before_root, before_out = snapshot(root), snapshot(out)
    proc = run_cli("bundle", "--root", str(root), "--mirror", str(mirror), "--runtime", "kata", "--arch", "amd64",
                   str(out), env=ENV, timeout=120)
    message = assert_known_error(proc, 2)
    assert "symlink" in message and "resolves outside the release" in message, message
    assert diff_snapshots(before_root, snapshot(root)) == [] and diff_snapshots(before_out, snapshot(out)) == []
