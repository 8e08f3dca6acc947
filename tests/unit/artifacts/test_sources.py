"""Sources: where upstream and mirror files are, and URLs redacted before they reach a message."""

from __future__ import annotations

import pytest

from nodeagent.artifacts import sources
from nodeagent.artifacts.sources import redact_text, redact_url
from nodeagent.errors import ArtifactError
from nodeagent.runtimes import gvisor, kata


def test_upstream_and_mirror_locations(tmp_path):
    up = gvisor.release_base(None, "20240729.0", "arm64").join("gvisor.tar.bz2")
    assert up.url == "https://storage.googleapis.com/gvisor/releases/release/20240729.0/aarch64/gvisor.tar.bz2"
    assert not up.allow_http
    tarball = kata.release_base(None, "3.11.0").join(kata.filename("3.11.0", "amd64", "tar.zst"))
    assert tarball.url == "https://github.com/kata-containers/kata-containers/releases/download/3.11.0/kata-static-3.11.0-amd64.tar.zst"
    m = gvisor.release_base("http://mirror.example/base/", "latest", "amd64").join("runsc")
    assert m.url == "http://mirror.example/base/gvisor/latest/x86_64/runsc" and m.allow_http
    d = kata.release_base(f"file://{tmp_path}", "3.11.0").join("k.tar.zst")
    assert d.path == tmp_path / "kata/3.11.0/k.tar.zst"
    assert kata.release_base(str(tmp_path), "3.11.0").join("k").path == tmp_path / "kata/3.11.0/k"
    with pytest.raises(ArtifactError, match="unsupported scheme"):
        sources.mirror_base("ftp://x/y")
    with pytest.raises(ArtifactError, match="does not exist"):
        sources.mirror_base(str(tmp_path / "missing"))


@pytest.mark.parametrize("url, shown", [
    ("https://user:pw@m.example:8443/a/b?token=t0k&x=1", "https://***@m.example:8443/a/b?token=***&x=***"),
    ("https://m.example/a?X-Amz-Signature=abc&X-Amz-Credential=AK%2F1", "https://m.example/a?X-Amz-Signature=***&X-Amz-Credential=***"),
    ("http://m.example/a#sig=zz", "http://m.example/a#***"),
    ("https://storage.googleapis.com/gvisor/releases/release/latest", "https://storage.googleapis.com/gvisor/releases/release/latest"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_redact_text_finds_urls_inside_messages():
    text = "HTTPSConnectionPool(host='m', port=443): Max retries exceeded with url: /a?sig=S3 (user:pw@ http://u:p@m/x)"
    assert "S3" not in redact_text(text) and "u:p@" not in redact_text(text)
