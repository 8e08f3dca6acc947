"""Pins (`--pins FILE`): digests the operator vouches for, carried apart from the mirror.

A mirror's own `.sha512`/`.sha256` files prove nothing when the mirror (or anyone on a plain
http path to it) can change both the file and its checksum. A pins file names the digest of
each artifact by its path in the mirror layout, as `sha256sum`/`sha512sum` print it:

    <64 or 128 hex digits>  gvisor/20240729.0/x86_64/gvisor.tar.bz2

A pin wins over any checksum file a mirror serves.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from nodeagent.artifacts.digest import Digest
from nodeagent.errors import ArtifactError

_ALGO_BY_LEN = {64: "sha256", 128: "sha512"}
_LINE = re.compile(r"([0-9a-fA-F]+) [ *]([^\s].*)")
MAX_BYTES = 1 << 20
HINT = "each line must be `<sha256 or sha512 hex>  <path in the mirror layout>`, as sha256sum/sha512sum print it"


@dataclass(frozen=True)
class Pins:
    """Digests by mirror-relative path (e.g. `kata/3.11.0/kata-static-3.11.0-amd64.tar.zst`)."""

    source: str = ""
    digests: dict[str, Digest] = field(default_factory=dict)

    def get(self, relpath: str) -> Digest | None:
        return self.digests.get(relpath)

    def covers(self, relpath: str) -> bool:
        return relpath in self.digests


NO_PINS = Pins()


def parse(text: str, source: str) -> Pins:
    """Read a pins file's text; any line that is not a pin is refused (a typo must not unpin)."""
    digests: dict[str, Digest] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _LINE.fullmatch(line.rstrip())
        algo = _ALGO_BY_LEN.get(len(m.group(1))) if m else None
        if m is None or algo is None:
            raise ArtifactError(f"pins file {source} line {number} is not a pin: {line[:80]!r}", HINT)
        relpath = _relpath(m.group(2), source, number)
        digest = Digest(algo, m.group(1).lower())
        if digests.get(relpath, digest) != digest:
            raise ArtifactError(f"pins file {source} pins {relpath} twice with different digests",
                                "keep one line per artifact; find out which digest is right")
        digests[relpath] = digest
    return Pins(source, digests)


def _relpath(raw: str, source: str, number: int) -> str:
    path = raw.removeprefix("./")
    norm = posixpath.normpath(path)
    if path.startswith("/") or norm != path or norm.startswith(".."):
        raise ArtifactError(
            f"pins file {source} line {number} names {raw!r}, not a path relative to the mirror root",
            "write paths as the mirror layout has them, e.g. gvisor/20240729.0/x86_64/gvisor.tar.bz2",
        )
    return path


def load(path: str | None) -> Pins:
    """The pins in `path` (None: no pins). Unreadable or malformed files are refused."""
    if not path:
        return NO_PINS
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ArtifactError(f"cannot read pins file {path}: {exc.strerror or exc}",
                            "pass an existing pins file to --pins (bundle writes one beside its directory)") from None
    if len(data) > MAX_BYTES:
        raise ArtifactError(f"pins file {path} is larger than {MAX_BYTES >> 20} MiB", HINT)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ArtifactError(f"pins file {path} is not UTF-8 text", HINT) from None
    return parse(text, path)


def render(digests: dict[str, Digest]) -> str:
    """A pins file's text for `digests` (sorted, so a re-run writes the same bytes)."""
    return "".join(f"{d.hex}  {rel}\n" for rel, d in sorted(digests.items()))


def pins_path_for(directory: str | Path) -> Path:
    """Where `bundle DIR` writes its pins: beside DIR (`DIR.pins`), so it can travel apart from it."""
    d = Path(os.path.abspath(directory))
    return d.with_name(d.name + ".pins")
