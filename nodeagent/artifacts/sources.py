"""Where artifacts come from: upstream https bases, or a `--mirror` (http(s)://, file://, a directory).

A Location is one file at one source. Plain http is allowed only when the operator named
an http mirror explicitly; upstream is always https.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

from nodeagent.artifacts import catalog
from nodeagent.errors import ArtifactError


@dataclass(frozen=True)
class Location:
    """One file: either a URL or a local path."""

    url: str | None = None
    path: Path | None = None
    allow_http: bool = False

    def __str__(self) -> str:
        return self.url if self.url is not None else str(self.path)

    def sibling(self, name: str) -> "Location":
        """Another file in the same directory (e.g. the `.sha512` next to an artifact)."""
        if self.url is not None:
            return Location(url=self.url.rsplit("/", 1)[0] + "/" + quote(name), allow_http=self.allow_http)
        return Location(path=self.path.parent / name)


@dataclass(frozen=True)
class Base:
    """A directory of files at a source, joined with relative POSIX paths."""

    url: str | None = None
    path: Path | None = None
    allow_http: bool = False

    def join(self, relpath: str) -> Location:
        if self.url is not None:
            return Location(url=self.url.rstrip("/") + "/" + quote(relpath), allow_http=self.allow_http)
        return Location(path=self.path / relpath)

    def __str__(self) -> str:
        return self.url if self.url is not None else str(self.path)


def mirror_base(mirror: str) -> Base:
    """Parse `--mirror`: an http(s):// or file:// base, or a local directory."""
    parsed = urlparse(mirror)
    if parsed.scheme in ("http", "https"):
        if not parsed.netloc:
            raise ArtifactError(f"mirror URL {mirror!r} has no host", "pass e.g. --mirror https://mirror.example/nodeagent")
        return Base(url=mirror, allow_http=True)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
    elif parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        path = Path(mirror)
    else:
        raise ArtifactError(
            f"mirror {mirror!r} uses an unsupported scheme {parsed.scheme!r}",
            "use an http(s):// or file:// URL, or a local directory",
        )
    if not path.is_dir():
        raise ArtifactError(f"mirror directory {path} does not exist", "pass the directory `nodeagent bundle` wrote")
    return Base(path=path.resolve())


def gvisor_base(mirror: str | None, version: str, arch: str) -> Base:
    """The directory holding one gVisor release for one arch."""
    rel = catalog.gvisor_dir(version, arch)
    if mirror is None:
        return Base(url=f"{catalog.GVISOR_UPSTREAM}/{rel}")
    m = mirror_base(mirror)
    return _sub(m, f"gvisor/{rel}")


def kata_base(mirror: str | None, version: str) -> Base:
    """The directory holding one Kata release's tarballs."""
    if mirror is None:
        return Base(url=f"{catalog.KATA_UPSTREAM}/{version}")
    return _sub(mirror_base(mirror), f"kata/{version}")


def _sub(base: Base, rel: str) -> Base:
    if base.url is not None:
        return Base(url=base.url.rstrip("/") + "/" + rel, allow_http=base.allow_http)
    return Base(path=base.path / rel)
