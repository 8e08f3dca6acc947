"""Digests: sidecar files in every format upstream and mirrors write, and the --kata-sha256 flag."""

from __future__ import annotations

import hashlib

import pytest

from nodeagent.artifacts.digest import Digest, parse_hex, parse_sidecar
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
