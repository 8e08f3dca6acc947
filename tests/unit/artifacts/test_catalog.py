"""Digest files, version/arch checks, source parsing: the small rules downloads rely on."""

from __future__ import annotations

import hashlib

import pytest

from nodeagent.artifacts import catalog, sources
from nodeagent.artifacts.digest import Digest, parse_hex, parse_sidecar
from nodeagent.artifacts.download import _check_scheme
from nodeagent.errors import ArtifactError

HEX512 = hashlib.sha512(b"x").hexdigest()
HEX256 = hashlib.sha256(b"x").hexdigest()


@pytest.mark.parametrize(
    "text",
    [
        f"{HEX512}  runsc\n",  # sha512sum output (gVisor's own files)
        f"{HEX512} *runsc\n",  # binary-mode marker
        f"{HEX512.upper()}  ./runsc\n",
        f"{HEX512}\n",  # a lone hash
        f"{'0' * 128}  other\n{HEX512}  runsc\n",  # a SHA512SUMS-style list
    ],
)
def test_sidecar_formats(text):
    assert parse_sidecar("sha512", text, "runsc", "runsc.sha512") == Digest("sha512", HEX512)


@pytest.mark.parametrize("text", ["", "not hex at all  runsc\n", f"{HEX256}  runsc\n", f"{'0' * 128}  other\n"])
def test_bad_sidecars_are_refused(text):
    with pytest.raises(ArtifactError) as exc:
        parse_sidecar("sha512", text, "runsc", "runsc.sha512")
    assert exc.value.hint


def test_kata_sha256_flag():
    assert parse_hex("sha256", f"sha256:{HEX256.upper()}", "--kata-sha256").hex == HEX256
    with pytest.raises(ArtifactError, match="not a sha256"):
        parse_hex("sha256", "abc", "--kata-sha256")


def test_arch_mapping_and_versions():
    assert catalog.gvisor_arch("amd64") == "x86_64" and catalog.gvisor_arch("arm64") == "aarch64"
    with pytest.raises(ArtifactError, match="no build for architecture 's390x'"):
        catalog.gvisor_arch("s390x")
    assert catalog.kata_filename("3.11.0", "ppc64le", "tar.zst") == "kata-static-3.11.0-ppc64le.tar.zst"
    for ok in ("latest", "20240729", "20240729.0"):
        catalog.check_version("gvisor", ok)
    for bad in ("../../etc", "2024", "latest/../x", ""):
        with pytest.raises(ArtifactError, match="invalid gvisor version"):
            catalog.check_version("gvisor", bad)
    with pytest.raises(ArtifactError):
        catalog.check_version("kata", "3.11.0/../../x")


def test_pinned_kata_digests_are_well_formed():
    for (version, arch, ext), hexval in catalog.KATA_PINNED_SHA256.items():
        Digest("sha256", hexval)
        assert ext in catalog.KATA_EXTS and arch in ("amd64", "arm64", "s390x", "ppc64le")


def test_upstream_and_mirror_locations(tmp_path):
    up = sources.gvisor_base(None, "20240729.0", "arm64").join("gvisor.tar.bz2")
    assert up.url == "https://storage.googleapis.com/gvisor/releases/release/20240729.0/aarch64/gvisor.tar.bz2"
    assert not up.allow_http
    kata = sources.kata_base(None, "3.11.0").join(catalog.kata_filename("3.11.0", "amd64", "tar.zst"))
    assert kata.url == "https://github.com/kata-containers/kata-containers/releases/download/3.11.0/kata-static-3.11.0-amd64.tar.zst"
    m = sources.gvisor_base("http://mirror.example/base/", "latest", "amd64").join("runsc")
    assert m.url == "http://mirror.example/base/gvisor/latest/x86_64/runsc" and m.allow_http
    d = sources.kata_base(f"file://{tmp_path}", "3.11.0").join("k.tar.zst")
    assert d.path == tmp_path / "kata/3.11.0/k.tar.zst"
    assert sources.kata_base(str(tmp_path), "3.11.0").join("k").path == tmp_path / "kata/3.11.0/k"
    with pytest.raises(ArtifactError, match="unsupported scheme"):
        sources.mirror_base("ftp://x/y")
    with pytest.raises(ArtifactError, match="does not exist"):
        sources.mirror_base(str(tmp_path / "missing"))


def test_plain_http_only_for_an_explicit_mirror():
    _check_scheme("https://x/y", allow_http=False)
    _check_scheme("http://x/y", allow_http=True)
    with pytest.raises(ArtifactError, match="only https"):
        _check_scheme("http://x/y", allow_http=False)
    with pytest.raises(ArtifactError):
        _check_scheme("ftp://x/y", allow_http=True)
