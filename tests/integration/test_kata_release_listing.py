"""Kata's digest from the release listing (issue 15 item 2), through the real CLI.

GitHub's release API (`GET /repos/{owner}/{repo}/releases/tags/{tag}`) lists a sha256 `digest` for
every release asset; Kata publishes no checksum file, so that listing is upstream's word. No
api.github.com is reachable here: the listing is a STAND-IN, a JSON file shaped like GitHub's answer
served by a REAL https server on 127.0.0.1 with a throwaway CA (tests/support/http_server.py). The
tarball comes from a second real https server acting as the mirror, which serves no `.sha256`, so the
listing is the only source of a digest unless the test adds one. The Kata release is self-made, with
a stand-in shim (no real Kata can run here: shared/notes/test-environment.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from nodeagent.settings import Settings
from tests.support import mirror_builder as M
from tests.support.cli import assert_known_error, run_cli
from tests.support.http_server import LoopbackServer, shared_tls
from tests.support.tree import diff_snapshots, snapshot

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
ENV = {"NODEAGENT_DOWNLOAD_BACKOFF": "0.01", "NODEAGENT_DOWNLOAD_RETRIES": "1", "NO_PROXY": "127.0.0.1,localhost",
       "REQUESTS_CA_BUNDLE": str(shared_tls().ca)}
VERSION = Settings().kata_version  # the default release: one GitHub lists digests for
ASSET = f"kata-static-{VERSION}-amd64.tar.zst"
TAGS = "repos/kata-containers/kata-containers/releases/tags"
LISTING = f"{TAGS}/{VERSION}"


def release_json(tag: str, assets: list[dict]) -> dict:
    """One release as GitHub's REST API answers it (the fields that matter, plus some that do not)."""
    return {
        "url": f"https://api.github.com/{TAGS}/{tag}", "tag_name": tag, "name": tag, "draft": False,
        "prerelease": False, "body": "## What's Changed\n" + "* a change\n" * 2000,
        "assets": [{"name": a["name"], "state": "uploaded", "size": 1, "digest": a.get("digest"),
                    "content_type": "application/octet-stream",
                    "browser_download_url": f"https://github.com/kata-containers/kata-containers/releases/download/{tag}/{a['name']}"}
                   for a in assets],
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def world(tmp_path):
    """(root with kind's containerd config, mirror dir with the tarball, API dir, the tarball)."""
    root, mirror, api = tmp_path / "root", tmp_path / "mirror", tmp_path / "api"
    (root / "etc/containerd").mkdir(parents=True)
    shutil.copyfile(CORPUS / "kind-node-v2.toml", root / "etc/containerd/config.toml")
    tarball = M.kata_release(mirror, VERSION, digest=False)
    api.mkdir()
    return root, mirror, api, tarball


def publish(api: Path, listing: dict | bytes, path: str = LISTING) -> None:
    f = api / path
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(listing if isinstance(listing, bytes) else json.dumps(listing).encode())


def honest_listing(tarball: Path) -> dict:
    return release_json(VERSION, [{"name": f"kata-static-{VERSION}-arm64.tar.zst", "digest": "sha256:" + "1" * 64},
                                  {"name": ASSET, "digest": "sha256:" + sha256(tarball)},
                                  {"name": "kata-containers-" + VERSION + "-vendor.tar.gz", "digest": None}])


def install(root: Path, mirror_url: str, api_url: str, *extra: str, command: str = "install"):
    return run_cli("--root", str(root), command, "--skip-eligibility", "--runtime", "kata", "--restart", "none",
                   "--mirror", mirror_url, "--kata-release-listing", f"{api_url}/{TAGS}/{{version}}", *extra,
                   env=ENV, timeout=120)


def lock_trace(change: str) -> bool:
    """The run lock a refusal after the lock leaves behind (meant to stay); nothing else may change."""
    return change in {"added run", "added run/nodeagent.lock", "changed run (mtime)"} or \
        change.startswith("changed run/nodeagent.lock ")


def refused(root: Path, mirror_url: str, api_url: str, *extra: str) -> str:
    before = snapshot(root)
    message = assert_known_error(install(root, mirror_url, api_url, *extra), 2)
    assert [d for d in diff_snapshots(before, snapshot(root)) if not lock_trace(d)] == []
    assert not (root / "opt/nodeagent").exists() and not (root / "var/cache/nodeagent").exists()
    return message


def servers(mirror: Path, api: Path) -> tuple[LoopbackServer, LoopbackServer]:
    return LoopbackServer(mirror, tls=shared_tls()), LoopbackServer(api, tls=shared_tls())


def test_online_install_verifies_with_the_listed_digest_and_asks_once(world):
    root, mirror, api, tarball = world
    publish(api, honest_listing(tarball))
    mirror_srv, api_srv = servers(mirror, api)
    with mirror_srv, api_srv:
        proc = install(root, mirror_srv.url, api_srv.url)
        assert proc.returncode == 0, proc.stderr
        assert [s.path for s in api_srv.seen] == [f"/{LISTING}"]
        assert mirror_srv.requests_for(f"kata/{VERSION}/{ASSET}.sha256") != []  # asked; the mirror had none to give
        again = install(root, mirror_srv.url, api_srv.url)  # the agent's next round: the cache's record
        assert again.returncode == 0, again.stderr
        assert len(api_srv.seen) == 1, "a re-run must not spend GitHub's rate limit"
    assert os.readlink(root / "opt/kata") == f"/opt/nodeagent/kata/{VERSION}"
    assert (root / f"opt/nodeagent/kata/{VERSION}/bin/containerd-shim-kata-v2").is_file()


def test_a_tampered_asset_is_refused(world):
    root, mirror, api, tarball = world
    publish(api, honest_listing(tarball))
    M.kata_release(mirror, VERSION, [*M.kata_members(b"#!/bin/sh\necho not kata\n")], digest=False)  # swapped
    mirror_srv, api_srv = servers(mirror, api)
    with mirror_srv, api_srv:
        message = refused(root, mirror_srv.url, api_srv.url)
    assert message.startswith(f"digest mismatch for {mirror_srv.url}/kata/{VERSION}/{ASSET}")


def test_a_wrong_digest_in_the_listing_is_refused(world):
    root, mirror, api, _ = world
    publish(api, release_json(VERSION, [{"name": ASSET, "digest": "sha256:" + "ab" * 32}]))
    mirror_srv, api_srv = servers(mirror, api)
    with mirror_srv, api_srv:
        message = refused(root, mirror_srv.url, api_srv.url)
    assert "digest mismatch" in message and "expected sha256 abababab" in message


BAD_LISTINGS = {
    "no-digest": (lambda t: release_json(VERSION, [{"name": ASSET, "digest": None}]), "gives no digest for " + ASSET),
    "no-such-asset": (lambda t: release_json(VERSION, [{"name": "kata-static-other.tar.zst", "digest": "sha256:" + "1" * 64}]),
                      f"release {VERSION} lists no asset {ASSET}"),
    "short-digest": (lambda t: release_json(VERSION, [{"name": ASSET, "digest": "sha256:abc"}]), "not sha256:<64 hex>"),
    "sha512-digest": (lambda t: release_json(VERSION, [{"name": ASSET, "digest": "sha512:" + "a" * 128}]), "not sha256:<64 hex>"),
    "digest-not-a-string": (lambda t: release_json(VERSION, [{"name": ASSET, "digest": 42}]), "not sha256:<64 hex>"),
    "twice-differently": (lambda t: release_json(VERSION, [{"name": ASSET, "digest": "sha256:" + sha256(t)},
                                                           {"name": ASSET, "digest": "sha256:" + "0" * 64}]),
                          "more than once with different digests"),
    "another-release": (lambda t: release_json("3.7.0", [{"name": ASSET, "digest": "sha256:" + sha256(t)}]),
                        "describes release '3.7.0'"),
    "not-json": (lambda t: b"<html>rate limited</html>", "is not JSON"),
    "not-a-release": (lambda t: [{"tag_name": VERSION}], "is not a release"),
    "too-large": (lambda t: b" " * (4 << 20) + b"{}", "larger than 4 MiB"),
    "missing": (None, "does not exist (HTTP 404)"),
}


@pytest.mark.parametrize("case", sorted(BAD_LISTINGS))
def test_a_listing_that_names_no_usable_digest_is_refused(world, case):
    """With no pin and no --kata-sha256 the listing is the last source: without its word, no Kata."""
    root, mirror, api, tarball = world
    build, expected = BAD_LISTINGS[case]
    if build is not None:
        publish(api, build(tarball))
    mirror_srv, api_srv = servers(mirror, api)
    with mirror_srv, api_srv:
        message = refused(root, mirror_srv.url, api_srv.url)
        assert all(s.method == "HEAD" for s in mirror_srv.requests_for(f"kata/{VERSION}/{ASSET}"))  # never downloaded
    assert expected in message


def test_an_unreachable_listing_is_refused_with_its_reason(world):
    root, mirror, api, _ = world
    mirror_srv, api_srv = servers(mirror, api)
    with mirror_srv:
        api_srv.start()
        api_srv.stop()  # the port now refuses connections
        message = refused(root, mirror_srv.url, api_srv.url)
    assert message.startswith(f"no sha256 digest for {ASSET}: nothing else names one") and "connection refused" in message


def test_a_plain_http_listing_is_refused_before_any_request(world):
    root, mirror, api, tarball = world
    publish(api, honest_listing(tarball))
    mirror_srv, api_srv = LoopbackServer(mirror, tls=shared_tls()), LoopbackServer(api)  # the API over plain http
    with mirror_srv, api_srv:
        message = refused(root, mirror_srv.url, api_srv.url)
        assert api_srv.seen == [] and mirror_srv.seen == []
    assert "is not an https URL" in message


def test_kata_sha256_and_pins_win_over_the_listing(world, tmp_path):
    """The listing lies here; the operator's digest is right and is never even compared with it."""
    root, mirror, api, tarball = world
    publish(api, release_json(VERSION, [{"name": ASSET, "digest": "sha256:" + "ab" * 32}]))
    pins = tmp_path / "pins"
    pins.write_text(f"{sha256(tarball)}  kata/{VERSION}/{ASSET}\n")
    other_root = tmp_path / "root2"
    shutil.copytree(root, other_root, symlinks=True)
    mirror_srv, api_srv = servers(mirror, api)
    with mirror_srv, api_srv:
        by_flag = install(root, mirror_srv.url, api_srv.url, "--kata-sha256", sha256(tarball))
        by_pins = install(other_root, mirror_srv.url, api_srv.url, "--pins", str(pins))
        assert api_srv.seen == []
    for r, proc in ((root, by_flag), (other_root, by_pins)):
        assert proc.returncode == 0, proc.stderr
        assert os.readlink(r / "opt/kata") == f"/opt/nodeagent/kata/{VERSION}"


def test_with_the_listing_off_and_no_digest_kata_is_refused(world):
    root, mirror, api, _ = world
    mirror_srv = LoopbackServer(mirror, tls=shared_tls())
    with mirror_srv:
        before = snapshot(root)
        proc = run_cli("--root", str(root), "install", "--skip-eligibility", "--runtime", "kata", "--restart", "none",
                       "--mirror", mirror_srv.url, env={**ENV, "NODEAGENT_KATA_RELEASE_LISTING": ""}, timeout=120)
        message = assert_known_error(proc, 2)
        assert [d for d in diff_snapshots(before, snapshot(root)) if not lock_trace(d)] == []
    assert f"no sha256 digest for {ASSET} from any source" in message and "release listing is off" in message


def test_bundle_records_the_listed_digest_in_its_pins(world, tmp_path):
    """`bundle` on a connected machine turns the listing's word into pins that travel to air-gapped nodes."""
    _, mirror, api, tarball = world
    publish(api, honest_listing(tarball))
    out = tmp_path / "bundle"
    mirror_srv, api_srv = servers(mirror, api)
    with mirror_srv, api_srv:
        proc = run_cli("bundle", "--runtime", "kata", "--arch", "amd64", "--mirror", mirror_srv.url,
                       "--kata-release-listing", f"{api_srv.url}/{TAGS}/{{version}}", str(out), env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "bundle.pins").read_text() == f"{sha256(tarball)}  kata/{VERSION}/{ASSET}\n"
    assert (out / f"kata/{VERSION}/{ASSET}.sha256").read_text() == f"{sha256(tarball)}  {ASSET}\n"
