"""Hostile tar members: the one table the extractor's unit test and the install and bundle
refusal tests share, so a member kind refused in one place is refused everywhere.

Each case is a list of members to slip into an otherwise good archive, with words its refusal
must contain. extract.scan refuses every one of them; a release refuses them too, plus members
that are only hostile in a release (a second runsc makes "which one is runsc?" ambiguous).
"""

from __future__ import annotations

from tests.support.mirror_builder import Member

HOSTILE_MEMBERS: dict[str, tuple[list[Member], str]] = {
    "traversal": ([Member("../evil", data=b"x")], "outside the archive"),
    "nested-traversal": ([Member("a/../../evil", data=b"x")], "outside the archive"),
    "absolute": ([Member("/etc/evil", data=b"x")], "absolute path"),
    "symlink-outside": ([Member("link", "symlink", link="../../etc/passwd")], "points outside"),
    "symlink-absolute": ([Member("link", "symlink", link="/etc/passwd")], "points outside"),
    "hardlink-outside": ([Member("hl", "hardlink", link="../etc/passwd")], "outside the archive"),
    "hardlink-absolute": ([Member("hl", "hardlink", link="/etc/passwd")], "outside the archive"),
    "hardlink-unknown": ([Member("hl", "hardlink", link="nothing-here")], "names no earlier file"),
    "device": ([Member("dev", "chr")], "device node"),
    "fifo": ([Member("pipe", "fifo")], "fifo"),
    "setuid": ([Member("helper", data=b"x", mode=0o4755)], "setuid"),
    "setgid": ([Member("helper", data=b"x", mode=0o2755)], "setuid/setgid"),
    "duplicate": ([Member("a", data=b"1"), Member("a", data=b"2")], "appears twice"),
    # a symlinked directory inside the tree, then a file "through" it: refused even if it stays inside
    "through-symlink": ([Member("d", "symlink", link="."), Member("d/x", data=b"x")], "non-directory"),
}

# hostile to a release only: extraction is fine, but the release then holds two runsc binaries
RELEASE_ONLY: dict[str, tuple[list[Member], str]] = {
    "second-runsc": ([Member("bin/runsc", data=b"another runsc")], "ambiguous"),
}

RELEASE_CASES = sorted([*HOSTILE_MEMBERS, *RELEASE_ONLY])


def hostile_release(good: list[Member], case: str) -> list[Member]:
    """A release's good members (first the runtime binary, then the rest) with the case's hostile
    members between them, so the refusal cannot come from a missing binary."""
    return [*good[:1], *_case(case)[0], *good[1:]]


def refusal_words(case: str) -> str:
    """Words the refusal of a release holding this case must contain."""
    return _case(case)[1]


def _case(case: str) -> tuple[list[Member], str]:
    return RELEASE_ONLY[case] if case in RELEASE_ONLY else HOSTILE_MEMBERS[case]
