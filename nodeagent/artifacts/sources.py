"""Where artifacts come from: upstream https bases, or a `--mirror` (http(s)://, file://, a directory).

A Location is one file at one source. Plain http is allowed only when the operator named
an http mirror explicitly; upstream is always https. A plain http source is not
`authenticated`: what it serves (checksum files included) may come from anyone on the path,
so its artifacts need a digest from elsewhere (pins, --kata-sha256, the pinned catalog).
A local directory or file:// mirror is the operator's own word, like a pins file.

Every URL that reaches a message, a log line or an Event goes through `redact_url` (or
`redact_text` for text that may embed one): mirror URLs can carry credentials.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit, urlparse

from nodeagent.errors import ArtifactError


@dataclass(frozen=True)
class Location:
    """One file: either a URL or a local path."""

    url: str | None = None
    path: Path | None = None
    allow_http: bool = False

    def __str__(self) -> str:
        return redact_url(self.url) if self.url is not None else str(self.path)

    @property
    def authenticated(self) -> bool:
        """Whether the channel vouches for the server (https, or a local file the operator named)."""
        return self.url is None or urlsplit(self.url).scheme == "https"

    def sibling(self, name: str) -> "Location":
        """Another file in the same directory (e.g. the `.sha512` next to an artifact)."""
        if self.url is not None:
            return Location(url=_url_path(self.url, lambda p: p.rsplit("/", 1)[0] + "/" + quote(name)), allow_http=self.allow_http)
        return Location(path=self.path.parent / name)


@dataclass(frozen=True)
class Base:
    """A directory of files at a source, joined with relative POSIX paths."""

    url: str | None = None
    path: Path | None = None
    allow_http: bool = False

    def join(self, relpath: str) -> Location:
        if self.url is not None:
            return Location(url=_url_path(self.url, lambda p: p.rstrip("/") + "/" + quote(relpath)), allow_http=self.allow_http)
        return Location(path=self.path / relpath)

    def __str__(self) -> str:
        return redact_url(self.url) if self.url is not None else str(self.path)

    @property
    def authenticated(self) -> bool:
        return self.url is None or urlsplit(self.url).scheme == "https"


REDACTED = "***"
_USERINFO = re.compile(r"(?<=://)[^/?#@\s]+@")
_QUERY_VALUE = re.compile(r"(?<=[?&;])([^=&;#\s'\"]+)=[^&;#\s'\"]*")


def redact_url(url: str) -> str:
    """`url` without secrets: user:password and every query value become `***`.

    Query values are all hidden, not only known names (`token`, `X-Amz-Signature`, `sig`, ...):
    a signed URL's parameters differ per vendor, and none of them helps to read an error.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rsplit("@", 1)[1]
    query = _QUERY_VALUE.sub(lambda m: f"{m.group(1)}={REDACTED}", "?" + parts.query)[1:] if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment and REDACTED))


def redact_text(text: str) -> str:
    """Redact URLs embedded in free text (e.g. an HTTP library's exception message)."""
    return _QUERY_VALUE.sub(lambda m: f"{m.group(1)}={REDACTED}", _USERINFO.sub(REDACTED + "@", text))


def mirror_base(mirror: str) -> Base:
    """Parse `--mirror`: an http(s):// or file:// base, or a local directory."""
    parsed = urlparse(mirror)
    if parsed.scheme in ("http", "https"):
        if not parsed.netloc:
            raise ArtifactError(f"mirror URL {redact_url(mirror)!r} has no host", "pass e.g. --mirror https://mirror.example/nodeagent")
        return Base(url=mirror, allow_http=True)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
    elif parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        path = Path(mirror)
    else:
        raise ArtifactError(
            f"mirror {redact_text(mirror)!r} uses an unsupported scheme {parsed.scheme!r}",
            "use an http(s):// or file:// URL, or a local directory",
        )
    if not path.is_dir():
        raise ArtifactError(f"mirror directory {path} does not exist", "pass the directory `nodeagent bundle` wrote")
    return Base(path=path.resolve())


def release_base(mirror: str | None, upstream: str, mirror_rel: str) -> Base:
    """One release's directory: `upstream` without a mirror, else `mirror_rel` under the mirror."""
    if mirror is None:
        return Base(url=upstream)
    return _sub(mirror_base(mirror), mirror_rel)


def _sub(base: Base, rel: str) -> Base:
    if base.url is not None:
        return Base(url=_url_path(base.url, lambda p: p.rstrip("/") + "/" + rel), allow_http=base.allow_http)
    return Base(path=base.path / rel)


def _url_path(url: str, change) -> str:
    """`url` with its path changed; a query (e.g. an access token) stays at the end where it works."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=change(parts.path)))
