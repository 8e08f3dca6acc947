"""`nodeagent bundle` through the real CLI, against a real HTTP(S) server on 127.0.0.1.

Every broken or hostile input must give exit 2, one `error:` and one `hint:` line, no
traceback, and leave both the host root and the bundle directory exactly as they were.
The gVisor binaries here are small stand-ins (the bundle checks names and safety, it does
not run them); installs with Debian's real runsc are in test_artifacts_install.py.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from nodeagent.artifacts import ensure_artifact
from nodeagent.host import HostRoot
from nodeagent.settings import Settings
from tests.support import mirror_builder as M
from tests.support.cli import assert_known_error, run_cli
from tests.support.hostile_tar import RELEASE_CASES, hostile_release, refusal_words
from tests.support.http_server import LoopbackServer, make_tls, shared_tls
from tests.support.tree import diff_snapshots, snapshot

pytestmark = pytest.mark.integration

ENV = {"NODEAGENT_DOWNLOAD_BACKOFF": "0.01", "NODEAGENT_DOWNLOAD_RETRIES": "2", "NO_PROXY": "127.0.0.1,localhost",
       "REQUESTS_CA_BUNDLE": str(shared_tls().ca)}
SMALL_GVISOR = [M.Member("./runsc", data=b"#!/bin/sh\necho runsc\n"), M.Member("./containerd-shim-runsc-v1", data=b"#!/bin/sh\n")]
V = "20240729.0"
GDIR = f"gvisor/{V}/x86_64"
KATA = "kata/3.28.0/kata-static-3.28.0-amd64.tar.zst"


def Mirror(directory) -> LoopbackServer:
    """The mirror under test, over https with the test CA (plain http needs pins: test_mirror_trust.py)."""
    return LoopbackServer(directory, tls=shared_tls())


@pytest.fixture
def world(tmp_path):
    """A mirror dir, an empty host root and a bundle dir that already holds an operator's file."""
    mirror, root, out = tmp_path / "mirror", tmp_path / "root", tmp_path / "bundle"
    root.mkdir()
    out.mkdir()
    (out / "README").write_text("carried in by hand\n")
    return mirror, root, out


def bundle(srv_url: str, root: Path, out: Path, *extra: str, env: dict | None = None):
    return run_cli("bundle", "--root", str(root), "--mirror", srv_url, "--arch", "amd64", *extra, str(out),
                   env={**ENV, **(env or {})}, timeout=60)


def refused(world, srv_url: str, *extra: str, env: dict | None = None) -> str:
    """Run bundle, assert the error contract and that nothing changed; return the error text."""
    mirror, root, out = world
    before_root, before_out = snapshot(root), snapshot(out)
    proc = bundle(srv_url, root, out, *extra, env=env)
    message = assert_known_error(proc, 2)
    assert diff_snapshots(before_root, snapshot(root)) == []
    assert diff_snapshots(before_out, snapshot(out)) == [], "no partial files, no temp leftovers"
    assert not out.with_name(out.name + ".pins").exists(), "pins only for a bundle that was written"
    return message


def test_bundle_writes_the_mirror_layout_and_installs_from_it_offline(world, tmp_path):
    mirror, root, out = world
    M.gvisor_tarball_release(mirror, V, SMALL_GVISOR)
    M.kata_release(mirror, "3.28.0")
    with Mirror(mirror) as srv:
        proc = bundle(srv.url, root, out, "--runtime", "all", "--gvisor-version", V, "-o", "json")
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        assert [f["action"] for f in data["files"]] == ["download"] * 4
        again = json.loads(bundle(srv.url, root, out, "--runtime", "all", "--gvisor-version", V, "-o", "json").stdout)
        assert [f["action"] for f in again["files"]] == ["present"] * 4  # second run: a no-op
        gets = [s for s in srv.seen if s.method == "GET" and not s.path.endswith((".sha512", ".sha256"))]
        assert len(gets) == 2
    for rel in (f"{GDIR}/gvisor.tar.bz2", KATA):
        sidecar = out / (rel + (".sha512" if rel.startswith("gvisor") else ".sha256"))
        algo = "sha512" if rel.startswith("gvisor") else "sha256"
        assert sidecar.read_text() == f"{hashlib.new(algo, (out / rel).read_bytes()).hexdigest()}  {Path(rel).name}\n"
        assert (out / rel).read_bytes() == (mirror / rel).read_bytes()
    assert snapshot(root) == {}  # bundle writes no host files
    pinned = (tmp_path / "bundle.pins").read_text().splitlines()  # beside DIR, to carry apart from it
    assert sorted(line.split("  ", 1)[1] for line in pinned) == sorted([f"{GDIR}/gvisor.tar.bz2", KATA])
    assert "MiB" not in proc.stderr  # progress only on a terminal, never into logs
    # the bundle is a mirror: install from the directory with no server at all
    res = ensure_artifact(HostRoot(root), Settings(root=str(root), mirror=str(out)), "kata", "amd64")
    assert res.action == "download" and (root / "opt/nodeagent/kata/3.28.0/bin/containerd-shim-kata-v2").exists()


def test_digest_mismatch(world):
    mirror, _, _ = world
    M.gvisor_tarball_release(mirror, V, SMALL_GVISOR)
    (mirror / GDIR / "gvisor.tar.bz2.sha512").write_text("ab" * 64 + "  gvisor.tar.bz2\n")
    with Mirror(mirror) as srv:
        assert "digest mismatch" in refused(world, srv.url, "--runtime", "gvisor", "--gvisor-version", V)


def test_truncated_body(world):
    mirror, _, _ = world
    M.gvisor_tarball_release(mirror, V, SMALL_GVISOR)
    with Mirror(mirror) as srv:
        srv.fault(f"{GDIR}/gvisor.tar.bz2", drop_after=100)  # every response stops after 100 bytes
        srv.range_support = False
        message = refused(world, srv.url, "--runtime", "gvisor", "--gvisor-version", V)
    assert "failed after 3 attempts" in message and "connection closed after 100 of" in message


def test_missing_checksum_file(world):
    mirror, _, _ = world
    M.gvisor_tarball_release(mirror, V, SMALL_GVISOR, digest=False)
    with Mirror(mirror) as srv:
        message = refused(world, srv.url, "--runtime", "gvisor", "--gvisor-version", V)
    assert "has no gvisor.tar.bz2.sha512 digest file" in message


def test_kata_without_any_digest(world):
    mirror, _, _ = world
    M.kata_release(mirror, "3.28.0", digest=False)
    with Mirror(mirror) as srv:  # the release listing off: no source at all (with one: test_kata_release_listing.py)
        message = refused(world, srv.url, "--runtime", "kata", "--kata-release-listing", "")
    assert "no sha256 digest for kata-static-3.28.0-amd64.tar.zst from any source" in message


def test_kata_sha256_flag_is_a_digest_source(world):
    mirror, root, out = world
    tarball = M.kata_release(mirror, "3.28.0", digest=False)
    with Mirror(mirror) as srv:
        bad = refused(world, srv.url, "--runtime", "kata", "--kata-sha256", "0" * 64)
        assert "digest mismatch" in bad
        good = hashlib.sha256(tarball.read_bytes()).hexdigest()
        proc = bundle(srv.url, root, out, "--runtime", "kata", "--kata-sha256", good)
    assert proc.returncode == 0, proc.stderr
    assert (out / (KATA + ".sha256")).read_text().startswith(good)


@pytest.mark.parametrize("case", RELEASE_CASES)
def test_hostile_members(world, case):
    mirror, _, _ = world
    M.gvisor_tarball_release(mirror, V, hostile_release(SMALL_GVISOR, case))
    with Mirror(mirror) as srv:
        message = refused(world, srv.url, "--runtime", "gvisor", "--gvisor-version", V)
    assert message.startswith("refusing gvisor.tar.bz2:") and refusal_words(case) in message


def test_hostile_kata_member(world):
    mirror, _, _ = world
    M.kata_release(mirror, "3.28.0", [*M.kata_members(), M.Member("./opt/kata/bin/qemu", "symlink", link="/usr/bin/qemu")])
    with Mirror(mirror) as srv:
        message = refused(world, srv.url, "--runtime", "kata")
    assert "points outside the archive" in message


def test_non_tarball(world):
    mirror, _, _ = world
    d = mirror / GDIR
    d.mkdir(parents=True)
    (d / "gvisor.tar.bz2").write_text("<html><body>Access denied by proxy</body></html>\n")
    M.write_digest(d / "gvisor.tar.bz2", "sha512")
    with Mirror(mirror) as srv:
        message = refused(world, srv.url, "--runtime", "gvisor", "--gvisor-version", V)
    assert "not a readable tar archive" in message


def test_404(world):
    mirror, _, _ = world
    mirror.mkdir()
    with Mirror(mirror) as srv:
        message = refused(world, srv.url, "--runtime", "gvisor", "--gvisor-version", "20991231.0")
    assert "no gVisor release 20991231.0 for x86_64" in message


def test_bounded_failure_is_fast(world):
    mirror, _, _ = world
    M.gvisor_tarball_release(mirror, V, SMALL_GVISOR)
    with Mirror(mirror) as srv:
        srv.fault(f"{GDIR}/gvisor.tar.bz2", status=500)
        t0 = time.monotonic()
        message = refused(world, srv.url, "--runtime", "gvisor", "--gvisor-version", V)
        elapsed = time.monotonic() - t0
        gets = [s for s in srv.requests_for(f"{GDIR}/gvisor.tar.bz2") if s.method == "GET"]
    assert "failed after 3 attempts: HTTP 500" in message
    assert len(gets) == 3 and elapsed < 10


def test_redirect_from_https_to_http_is_refused(world, tmp_path):
    mirror, _, _ = world
    M.gvisor_tarball_release(mirror, V, SMALL_GVISOR)
    tls = make_tls(tmp_path / "tls")
    with LoopbackServer(mirror) as plain, LoopbackServer(mirror, tls=tls) as secure:
        env = {"REQUESTS_CA_BUNDLE": str(tls.ca)}
        secure.fault(f"{GDIR}/gvisor.tar.bz2", redirect=f"{plain.url}/{GDIR}/gvisor.tar.bz2")
        message = refused(world, secure.url, "--runtime", "gvisor", "--gvisor-version", V, env=env)
        assert "refused redirect from https://127.0.0.1" in message and "to the insecure http://127.0.0.1" in message
        assert plain.requests_for(f"{GDIR}/gvisor.tar.bz2") == []  # never fetched over plain http
        # the same https mirror without the redirect works (so the refusal is about the redirect)
        del secure.faults[f"/{GDIR}/gvisor.tar.bz2"]
        _, root, out = world
        proc = bundle(secure.url, root, out, "--runtime", "gvisor", "--gvisor-version", V, env=env)
        assert proc.returncode == 0, proc.stderr


def test_proxy_from_the_environment_is_used(world, tmp_path):
    """HTTP_PROXY is honoured (requests' trust_env): the mirror's own port is closed, the proxy serves."""
    mirror, root, out = world
    M.gvisor_tarball_release(mirror, V, SMALL_GVISOR)
    gone = LoopbackServer(mirror).start()  # plain http: a forward proxy sees the request
    gone.stop()  # nothing listens at the mirror URL any more
    pins = M.write_pins(mirror, tmp_path / "pins")  # a plain http mirror needs pins
    with LoopbackServer(mirror) as proxy:  # answers absolute-URI requests like a forward proxy
        proc = bundle(gone.url, root, out, "--runtime", "gvisor", "--gvisor-version", V, "--pins", str(pins),
                      env={"HTTP_PROXY": proxy.url, "http_proxy": proxy.url, "NO_PROXY": "", "no_proxy": ""})
        assert proc.returncode == 0, proc.stderr
        assert proxy.requests_for(f"{GDIR}/gvisor.tar.bz2")
