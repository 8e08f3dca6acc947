"""Downloads: plain http only where the operator named a mirror."""

from __future__ import annotations

import pytest

from nodeagent.artifacts.download import _check_scheme
from nodeagent.errors import ArtifactError


def test_plain_http_only_for_an_explicit_mirror():
    _check_scheme("https://x/y", allow_http=False)
    _check_scheme("http://x/y", allow_http=True)
    with pytest.raises(ArtifactError, match="only https"):
        _check_scheme("http://x/y", allow_http=False)
    with pytest.raises(ArtifactError):
        _check_scheme("ftp://x/y", allow_http=True)
