"""A release asset's sha256 from its hosting service's release listing, as upstream's word.

Kata publishes no checksum files. GitHub, which hosts its releases, computes a sha256 for every
release asset and lists it in the release's REST representation (`GET
/repos/{owner}/{repo}/releases/tags/{tag}`): each entry of `assets` has `name`,
`browser_download_url` and `digest` = `"sha256:<hex>"`, or null for assets GitHub never hashed
(the field exists since June 2025: https://github.blog/changelog/2025-06-03-releases-now-expose-digests-for-release-assets/).

The listing is read over https only, so the digest is GitHub's word about upstream's file and not
the word of whoever serves the tarball (a mirror, or anyone on its path). Only the digest is taken
from it; where the tarball comes from stays the catalog's or the mirror's business. The setting is
a URL template: `{version}` becomes the release's tag, and the answer must name that same tag.
An empty setting turns the lookup off (air-gapped nodes, where it could only time out).
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from nodeagent.artifacts.digest import Digest
from nodeagent.artifacts.download import Fetcher, NotFound
from nodeagent.artifacts.sources import Location, redact_url
from nodeagent.errors import ArtifactError

MAX_BYTES = 4 << 20  # Kata's listing is ~100 KiB (release notes + ~40 assets); anything far larger is not one
_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
HINT = "pass --kata-sha256 <hex> from a source you trust, or --pins (the file `nodeagent bundle` writes)"


def check_url(template: str) -> None:
    """Refuse a listing URL that could not be upstream's word (no network; empty means off)."""
    if not template:
        return
    parts = urlsplit(template)
    if parts.scheme != "https" or not parts.netloc:
        raise ArtifactError(
            f"the release listing {redact_url(template)!r} is not an https URL; a listing read over plain http "
            "proves nothing about the files it lists",
            "use an https URL for kata_release_listing (default: GitHub's API), or an empty value to turn the lookup off",
        )


def listing_location(template: str, version: str) -> Location:
    check_url(template)
    return Location(url=template.replace("{version}", version))


def listed_digest(fetcher: Fetcher, template: str, version: str, asset: str) -> Digest:
    """The sha256 the listing names for `asset` of release `version` (ArtifactError if none)."""
    loc = listing_location(template, version)
    try:
        data = fetcher.read_capped(loc, MAX_BYTES, _HEADERS)
    except NotFound:
        data = None
    except ArtifactError as exc:
        raise ArtifactError(
            f"no sha256 digest for {asset}: nothing else names one and the release listing could not be read: {exc.message}",
            HINT + "; GitHub allows 60 unauthenticated API requests an hour per address",
        ) from None
    if data is None:
        raise ArtifactError(f"no sha256 digest for {asset}: the release listing {loc} does not exist (HTTP 404)",
                            "check --kata-version names a published release; " + HINT)
    if len(data) > MAX_BYTES:
        raise ArtifactError(f"the release listing {loc} is larger than {MAX_BYTES >> 20} MiB; refused",
                            "check kata_release_listing names one release's REST URL; " + HINT)
    return parse(data, str(loc), version, asset)


def parse(data: bytes, source: str, version: str, asset: str) -> Digest:
    """Read one release's JSON and return `asset`'s digest; anything unexpected is refused."""
    try:
        release = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ArtifactError(f"the release listing {source} is not JSON", "check kata_release_listing; " + HINT) from None
    if not isinstance(release, dict) or not isinstance(release.get("assets"), list):
        raise ArtifactError(f"the release listing {source} is not a release (no `assets` list)",
                            "check kata_release_listing names one release, e.g. .../releases/tags/{version}; " + HINT)
    if release.get("tag_name") != version:
        raise ArtifactError(
            f"the release listing {source} describes release {str(release.get('tag_name'))[:40]!r}, not {version!r}",
            "check kata_release_listing has `{version}` where the tag goes; " + HINT,
        )
    found = [a for a in release["assets"] if isinstance(a, dict) and a.get("name") == asset]
    if not found:
        raise ArtifactError(f"release {version} lists no asset {asset} at {source}",
                            "check --kata-version and the architecture; " + HINT)
    values = {a.get("digest") for a in found}
    if len(values) != 1:
        raise ArtifactError(f"the release listing {source} names {asset} more than once with different digests", HINT)
    value = values.pop()
    if value is None:
        raise ArtifactError(f"the release listing {source} gives no digest for {asset} (assets GitHub never hashed have none)",
                            HINT)
    m = _DIGEST.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ArtifactError(f"the release listing {source} gives {asset} a digest that is not sha256:<64 hex>: {str(value)[:80]!r}",
                            HINT)
    return Digest("sha256", m.group(1))
