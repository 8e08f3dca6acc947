"""The catalog: architecture names, version checks, the pinned Kata digests."""

from __future__ import annotations

import pytest

from nodeagent.artifacts import catalog
from nodeagent.artifacts.digest import Digest
from nodeagent.errors import ArtifactError
from nodeagent.runtimes import gvisor, kata


def test_arch_mapping_and_versions():
    assert gvisor.upstream_arch("amd64") == "x86_64" and gvisor.upstream_arch("arm64") == "aarch64"
    with pytest.raises(ArtifactError, match="no build for architecture 's390x'"):
        gvisor.upstream_arch("s390x")
    assert kata.filename("3.11.0", "ppc64le", "tar.zst") == "kata-static-3.11.0-ppc64le.tar.zst"
    for ok in ("latest", "20240729", "20240729.0"):
        catalog.check_version("gvisor", ok)
    for bad in ("../../etc", "2024", "latest/../x", ""):
        with pytest.raises(ArtifactError, match="invalid gvisor version"):
            catalog.check_version("gvisor", bad)
    with pytest.raises(ArtifactError):
        catalog.check_version("kata", "3.11.0/../../x")


def test_pinned_kata_digests_are_well_formed():
    for (version, arch, ext), hexval in kata.PINNED_SHA256.items():
        Digest("sha256", hexval)
        assert ext in kata.EXTS and arch in ("amd64", "arm64", "s390x", "ppc64le")
