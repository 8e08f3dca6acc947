"""Release trust: a plain http mirror is trusted only for files a pin (or a digest flag, or the
pinned catalog) covers."""

from __future__ import annotations

import pytest

from nodeagent.artifacts import pins
from nodeagent.artifacts.digest import Digest
from nodeagent.artifacts.release import check_trusted
from nodeagent.errors import ArtifactError


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
