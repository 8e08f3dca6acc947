"""Reading a release listing (GitHub's `GET .../releases/tags/{tag}` JSON) and the default it starts from.

The fetch itself, and every refusal through the CLI, is in tests/integration/test_kata_release_listing.py.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from nodeagent.artifacts import release_listing
from nodeagent.runtimes import kata
from nodeagent.artifacts.digest import Digest
from nodeagent.errors import ArtifactError
from nodeagent.settings import Settings

HEX = "f" * 64
ASSET = "kata-static-3.28.0-amd64.tar.zst"


def listing(**release) -> bytes:
    body = {"tag_name": "3.28.0", "assets": [{"name": ASSET, "digest": f"sha256:{HEX}"}]}
    body.update(release)
    return json.dumps(body).encode()


def test_the_listed_sha256_is_read():
    assert release_listing.parse(listing(), "L", "3.28.0", ASSET) == Digest("sha256", HEX)


@pytest.mark.parametrize("value", [f"sha256:{HEX.upper()}", f"SHA256:{HEX}", f"sha256:{HEX} ", HEX, f"md5:{HEX[:32]}"])
def test_only_lowercase_sha256_colon_hex_is_a_digest(value):
    with pytest.raises(ArtifactError, match="not sha256:<64 hex>") as exc:
        release_listing.parse(listing(assets=[{"name": ASSET, "digest": value}]), "L", "3.28.0", ASSET)
    assert "--kata-sha256" in exc.value.hint


def test_the_same_digest_listed_twice_is_fine():
    twice = [{"name": ASSET, "digest": f"sha256:{HEX}"}] * 2
    assert release_listing.parse(listing(assets=twice), "L", "3.28.0", ASSET).hex == HEX


def test_non_object_assets_are_skipped_not_trusted():
    assets = ["kata-static-3.28.0-amd64.tar.zst", None, {"name": ASSET, "digest": f"sha256:{HEX}"}]
    assert release_listing.parse(listing(assets=assets), "L", "3.28.0", ASSET).hex == HEX


def test_a_listing_without_a_tag_is_refused():
    with pytest.raises(ArtifactError, match="describes release 'None'"):
        release_listing.parse(json.dumps({"assets": []}).encode(), "L", "3.28.0", ASSET)


@pytest.mark.parametrize("url", ["http://api.example/{version}", "ftp://x/{version}", "https:///{version}", "api.github.com/x"])
def test_only_https_listings(url):
    with pytest.raises(ArtifactError, match="not an https URL"):
        release_listing.check_url(url)


def test_empty_turns_the_lookup_off_and_the_template_takes_the_tag():
    release_listing.check_url("")
    loc = release_listing.listing_location("https://api.example/releases/tags/{version}?x=1", "3.28.0")
    assert loc.url == "https://api.example/releases/tags/3.28.0?x=1" and loc.authenticated


def test_the_default_is_githubs_tag_endpoint_and_the_default_version_has_a_digest_source():
    s = Settings()
    url = urlsplit(s.kata_release_listing)
    assert (url.scheme, url.netloc, url.path) == ("https", "api.github.com",
                                                   "/repos/kata-containers/kata-containers/releases/tags/{version}")
    # released after GitHub began listing asset digests (June 2025; 3.20.0 was current in August 2025,
    # kata-containers#11714); arm64's value is also pinned
    assert tuple(int(p) for p in s.kata_version.split(".")) >= (3, 20, 0)
    assert kata.pinned(s.kata_version, "arm64", "tar.zst") == \
        "f63d54507d1f18635d94475077e4c2330de4d8e05cedf25f7c38f063b0e66a91"
    assert kata.pinned(s.kata_version, "amd64", "tar.zst") is None  # one published value only: not pinned
