"""Every symlink in a release must resolve inside the release directory.

The member checks in extract.py look at one link at a time, textually, against the archive
root; a chain defeats that: `d/l1 -> ..` then `d/l2 -> l1/..` climbs one level per link, and
a link inside opt/kata may point at `../../etc`, which is inside the archive but not inside
the release (only opt/kata is installed). So after staging, each link is resolved the way
the kernel would, component by component, following links to links, and refused if the
walk ever leaves the release directory. Absolute targets are refused unless they start with
one of `host_trees` (Kata's /opt/kata is our link to this very directory).
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Callable, Iterable

from nodeagent.artifacts.extract import Entry
from nodeagent.errors import ArtifactError

MAX_HOPS = 40  # the kernel's own limit (ELOOP)

Kind = Callable[[tuple[str, ...]], str | None]  # "dir" | "file" | "symlink" | None (absent)
ReadLink = Callable[[tuple[str, ...]], str]


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _host_relative(target: str, host_trees: tuple[str, ...]) -> list[str] | None:
    for tree in host_trees:
        if target == tree or target.startswith(tree.rstrip("/") + "/"):
            return _parts(target[len(tree):])
    return None


def escapes(link: tuple[str, ...], kind: Kind, readlink: ReadLink, host_trees: tuple[str, ...] = ()) -> str | None:
    """Why resolving `link` leaves the tree (None if it stays inside, even when it dangles)."""
    done: list[str] = []
    todo = list(reversed(link))
    hops = 0
    present = True  # a missing component ends the real walk; the rest is followed lexically
    while todo:
        part = todo.pop()
        if part == "..":
            if not done:
                return "it climbs above the release directory"
            done.pop()
            continue
        here = (*done, part)
        what = kind(here) if present else None
        if what == "symlink":
            hops += 1
            if hops > MAX_HOPS:
                return "its chain of links loops"
            target = readlink(here)
            if target.startswith("/"):
                rest = _host_relative(posixpath.normpath(target), host_trees)
                if rest is None:
                    return f"a link in its chain points at the absolute path {target!r}"
                done = []
                todo.extend(reversed(rest))
            else:
                todo.extend(reversed(_parts(target)))
            continue
        present = what is not None
        done.append(part)
    return None


def _refuse(archive: str, link: str, target: str, why: str) -> ArtifactError:
    return ArtifactError(
        f"refusing {archive}: symlink {link!r} -> {target!r} resolves outside the release ({why})",
        "the archive is unsafe or not a release of this runtime; use the upstream artifact or rebuild the bundle",
    )


def check_tree(tree: Path, archive: str, host_trees: tuple[str, ...] = ()) -> None:
    """Resolve every symlink under the staged directory `tree` for real; refuse any escape."""
    def kind(parts: tuple[str, ...]) -> str | None:
        path = tree.joinpath(*parts)
        if os.path.islink(path):
            return "symlink"
        if os.path.isdir(path):
            return "dir"
        return "file" if os.path.lexists(path) else None

    def readlink(parts: tuple[str, ...]) -> str:
        return os.readlink(tree.joinpath(*parts))

    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            if not os.path.islink(full):
                continue
            rel = full.relative_to(tree).parts
            why = escapes(rel, kind, readlink, host_trees)
            if why:
                raise _refuse(archive, "/".join(rel), os.readlink(full), why)


def check_entries(entries: Iterable[Entry], tree: str, archive: str, host_trees: tuple[str, ...] = ()) -> None:
    """The same check on a scanned archive (no extraction), for the members under `tree`."""
    prefix = tree.rstrip("/") + "/" if tree else ""
    nodes: dict[tuple[str, ...], Entry] = {}
    for e in entries:
        if e.name.startswith(prefix):
            parts = tuple(e.name[len(prefix):].split("/"))
            nodes[parts] = e
            for i in range(1, len(parts)):
                nodes.setdefault(parts[:i], Entry("/".join(parts[:i]), "dir"))

    def kind(parts: tuple[str, ...]) -> str | None:
        e = nodes.get(parts)
        return None if e is None else ("file" if e.kind == "hardlink" else e.kind)

    def readlink(parts: tuple[str, ...]) -> str:
        return nodes[parts].link or ""

    for parts, e in sorted(nodes.items()):
        if e.kind == "symlink":
            why = escapes(parts, kind, readlink, host_trees)
            if why:
                raise _refuse(archive, prefix + "/".join(parts), e.link or "", why)
