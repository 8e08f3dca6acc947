"""detect.containerd: the version in every `containerd --version` line packagers write."""

import pytest

from nodeagent.detect import containerd


@pytest.mark.parametrize("text, version", [
    ("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3", "1.6.20"),
    ("containerd github.com/containerd/containerd/v2 2.1.9+ds1 2.1.9+ds1-5", "2.1.9"),
    ("containerd containerd.io 1.7.13 7c3aca7a610df76212171d200ca3811ff6096eb8", "1.7.13"),
    ("containerd github.com/k3s-io/containerd v1.7.20-k3s1", "1.7.20"),
    ("no version here", None),
])
def test_parse_version(text, version):
    assert containerd.parse_version(text) == version
