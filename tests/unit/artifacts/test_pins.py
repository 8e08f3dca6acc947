"""Pins parsing, the trust rule for plain http mirrors, and URL redaction (pure functions)."""

from __future__ import annotations

import pytest

from nodeagent.artifacts import pins
from nodeagent.artifacts.digest import Digest
from nodeagent.artifacts.release import check_trusted
from nodeagent.artifacts.sources import redact_text, redact_url
from nodeagent.errors import ArtifactError

G = "gvisor/20240729.0/x86_64/gvisor.tar.bz2"


def test_pins_read_sha256sum_and_sha512sum_output():
    text = f"# carried from the build host\n{'A' * 128}  {G}\n{'b' * 64} *./kata/3.11.0/kata-static-3.11.0-amd64.tar.zst\n\n"
    p = pins.parse(text, "p")
    assert p.get(G) == Digest("sha512", "a" * 128)
    assert p.get("kata/3.11.0/kata-static-3.11.0-amd64.tar.zst") == Digest("sha256", "b" * 64)
    assert pins.parse(pins.render(p.digests), "again").digests == p.digests


@pytest.mark.parametrize("line", [f"{'a' * 100}  {G}", f"{'a' * 64}  /etc/x", f"{'a' * 64}  a/./b",
                                  f"{'a' * 64}", f"{'g' * 64}  {G}", f"{'a' * 64}  {G}\n{'b' * 64}  {G}"])
def test_malformed_pins_are_refused(line):
    with pytest.raises(ArtifactError) as exc:
        pins.parse(line + "\n", "p")
    assert exc.value.hint


def test_plain_http_needs_a_pin_for_every_file_of_one_layout(tmp_path):
    files = pins.Pins("p", {f"gvisor/20240729.0/x86_64/{n}": Digest("sha512", "a" * 128) for n in ("runsc", "containerd-shim-runsc-v1")})
    check_trusted("gvisor", "20240729.0", "amd64", "http://m", files)  # the older two-file layout, fully pinned
    with pytest.raises(ArtifactError, match="plain http mirror"):
        check_trusted("gvisor", "20240729.0", "amd64", "http://m", pins.Pins("p", {"gvisor/20240729.0/x86_64/runsc": Digest("sha512", "a" * 128)}))
    with pytest.raises(ArtifactError) as exc:
        check_trusted("kata", "3.11.0", "amd64", "http://m", pins.NO_PINS)
    assert "--pins" in exc.value.hint
    check_trusted("kata", "3.11.0", "amd64", "http://m", pins.NO_PINS, kata_sha256="a" * 64)
    check_trusted("kata", "3.7.0", "amd64", "http://m", pins.NO_PINS)  # the pinned catalog covers it
    for trusted in (None, "https://m", str(tmp_path), f"file://{tmp_path}"):  # upstream, TLS, the operator's dir
        check_trusted("gvisor", "latest", "amd64", trusted, pins.NO_PINS)


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
