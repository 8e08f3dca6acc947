"""Pins: sha256sum/sha512sum output parsed and rendered, malformed lines refused."""

from __future__ import annotations

import pytest

from nodeagent.artifacts import pins
from nodeagent.artifacts.digest import Digest
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
