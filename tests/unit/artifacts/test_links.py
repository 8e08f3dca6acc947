"""Links inside a release: chains that climb out of the tree are refused, in a scanned archive
(bundle) and in an extracted tree (install) alike; links that stay inside pass."""

from __future__ import annotations

import pytest

from nodeagent.artifacts import extract, links
from nodeagent.errors import ArtifactError
from tests.support.mirror_builder import Member, build_tar


LINK_CHAINS = {
    "climb-by-chain": [Member("opt/kata/d/", "dir"), Member("opt/kata/d/l1", "symlink", link=".."),
                       Member("opt/kata/d/l2", "symlink", link="l1/..")],
    "inside-archive-outside-tree": [Member("opt/kata/share", "symlink", link="../../etc")],
    "absolute-into-the-tree-then-up": [Member("opt/kata/up", "symlink", link=".."),
                                       Member("opt/kata/out", "symlink", link="/opt/kata/up/x")],
    "loop": [Member("opt/kata/x", "symlink", link="y"), Member("opt/kata/y", "symlink", link="x")],
}


@pytest.mark.parametrize("case", sorted(LINK_CHAINS))
def test_link_chains_leaving_the_tree_are_refused_on_disk_and_in_a_scan(tmp_path, case):
    """The same rule for an extracted release (install) and a scanned archive (bundle)."""
    tarball = build_tar(tmp_path / "k.tar", [Member("opt/kata/bin/shim", data=b"x"), *LINK_CHAINS[case]], "")
    entries = extract.scan(tarball, host_trees=("/opt/kata",))  # each link alone passes the member check
    with pytest.raises(ArtifactError, match="resolves outside the release"):
        links.check_entries(entries, "opt/kata", "k.tar", host_trees=("/opt/kata",))
    out = tmp_path / "out"
    out.mkdir()
    extract.extract(tarball, out, host_trees=("/opt/kata",))
    with pytest.raises(ArtifactError, match="resolves outside the release"):
        links.check_tree(out / "opt/kata", "k.tar", host_trees=("/opt/kata",))


def test_links_that_stay_inside_pass_even_dangling_or_via_the_host_tree(tmp_path):
    members = [Member("opt/kata/bin/shim", data=b"x"), Member("opt/kata/bin/a", "symlink", link="shim"),
               Member("opt/kata/bin/b", "symlink", link="../bin/./a"), Member("opt/kata/c", "symlink", link="/opt/kata/bin/b"),
               Member("opt/kata/dangling", "symlink", link="lib/not/yet/../there")]
    tarball = build_tar(tmp_path / "k.tar", members, "")
    links.check_entries(extract.scan(tarball, host_trees=("/opt/kata",)), "opt/kata", "k.tar", host_trees=("/opt/kata",))
    out = tmp_path / "out"
    out.mkdir()
    extract.extract(tarball, out, host_trees=("/opt/kata",))
    links.check_tree(out / "opt/kata", "k.tar", host_trees=("/opt/kata",))
