"""Digests: what we expect an artifact to hash to, and reading `sha512sum`-style files.

A digest is mandatory for every artifact; its hex also names the artifact in the cache.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from nodeagent.errors import ArtifactError

_HEX_LEN = {"sha256": 64, "sha512": 128}
_LINE = re.compile(r"^\s*([0-9a-fA-F]+)(?:\s+\*?(\S.*?))?\s*$")


@dataclass(frozen=True)
class Digest:
    """An algorithm and the lowercase hex we expect."""

    algo: str
    hex: str

    def __post_init__(self) -> None:
        if self.algo not in _HEX_LEN:
            raise ValueError(f"unsupported digest algorithm {self.algo}")
        if len(self.hex) != _HEX_LEN[self.algo] or not re.fullmatch(r"[0-9a-f]+", self.hex):
            raise ValueError(f"not a {self.algo} hex digest: {self.hex!r}")

    def hasher(self):
        return hashlib.new(self.algo)

    def __str__(self) -> str:
        return f"{self.algo}:{self.hex}"

    def sidecar_suffix(self) -> str:
        """The digest file's extension in the mirror layout: `.sha512` / `.sha256`."""
        return "." + self.algo

    def sidecar_text(self, filename: str) -> str:
        """What `sha512sum FILE` would print, which is what mirrors carry."""
        return f"{self.hex}  {filename}\n"


def parse_hex(algo: str, text: str, what: str) -> Digest:
    """A user-given hex digest (e.g. --kata-sha256), with or without an `sha256:` prefix."""
    value = text.strip().lower()
    if value.startswith(algo + ":"):
        value = value[len(algo) + 1 :]
    try:
        return Digest(algo, value)
    except ValueError:
        raise ArtifactError(
            f"{what} is not a {algo} digest: {text!r}",
            f"pass the {_HEX_LEN[algo]}-character hex {algo} of the file",
        ) from None


def parse_sidecar(algo: str, text: str, filename: str, source: str) -> Digest:
    """Read a `<hex>  <filename>` file; the line naming `filename` wins, a lone hash is accepted.

    gVisor's and our mirror's files hold one line; files listing several artifacts
    (a SHA512SUMS style) are accepted as long as exactly one line names our file.
    """
    found: list[str] = []
    lone: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            raise ArtifactError(
                f"digest file {source} is not in `sha{algo[3:]}sum` format",
                "regenerate it with `sha512sum FILE > FILE.sha512` (or sha256sum for Kata)",
            )
        hexval, name = m.group(1).lower(), m.group(2)
        if name is None:
            lone.append(hexval)
        elif name.lstrip("./").rsplit("/", 1)[-1] == filename:
            found.append(hexval)
    candidates = found or (lone if len(lone) == 1 else [])
    if len(set(candidates)) != 1:
        raise ArtifactError(
            f"digest file {source} has no single {algo} entry for {filename}",
            "regenerate it with `sha512sum FILE > FILE.sha512` (or sha256sum for Kata)",
        )
    try:
        return Digest(algo, candidates[0])
    except ValueError:
        raise ArtifactError(
            f"digest file {source} does not hold a valid {algo} value",
            "regenerate it with `sha512sum FILE > FILE.sha512` (or sha256sum for Kata)",
        ) from None


def hash_file_into(hasher, path, chunk: int = 1 << 20) -> None:
    """Feed a file into `hasher`, read in chunks (constant memory)."""
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                return
            hasher.update(block)


def file_digest(path, algo: str, chunk: int = 1 << 20) -> str:
    """Hex digest of a file (see hash_file_into)."""
    h = hashlib.new(algo)
    hash_file_into(h, path, chunk)
    return h.hexdigest()
