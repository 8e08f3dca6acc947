"""`nodeagent bundle`: write an offline mirror (artifacts + digest files) for air-gapped nodes.

Every artifact is verified while downloading, and release tarballs are checked as an
install would check them (safe members, the expected binaries present exactly once), so
a bad bundle is caught on the connected machine rather than on the node. Files are
fetched to temp names first and renamed into the layout only when all of them passed;
a failed run leaves DIR as it was.

DIR must belong to us and be writable by nobody else: root writing into a directory another
user controls can be steered by links planted there (security review M1). The digests are also
written to `DIR.pins`, beside DIR, so they can travel to the nodes by another channel than the
mirror (`--pins`): a mirror must not vouch for its own files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from nodeagent import runtimes as runtime_plugins
from nodeagent.artifacts import extract, pins, release_listing
from nodeagent.artifacts.api import fetch_options
from nodeagent.artifacts.digest import file_digest
from nodeagent.artifacts.download import Fetcher
from nodeagent.artifacts.progress import tty_progress
from nodeagent.artifacts.release import Release, resolve
from nodeagent.journal import Journal
from nodeagent.errors import ArtifactError, HostError
from nodeagent.fsutil import atomic_write

NEW_SUFFIX = ".nodeagent-new"


@dataclass
class BundleResult:
    directory: str
    files: list[dict] = field(default_factory=list)
    pins: str | None = None  # the pins file written beside the directory

    def as_dict(self) -> dict:
        return {"dir": self.directory, "files": self.files, "pins": self.pins}


def _bundled_pins(pins_file: Path, text: bytes | None) -> dict:
    """The pins an earlier bundle run wrote (other runtimes or arches stay pinned)."""
    if text is None or pins_file.stat().st_uid not in (0, os.geteuid()):
        return {}
    try:
        return dict(pins.parse(text.decode("utf-8"), str(pins_file)).digests)
    except (ArtifactError, UnicodeDecodeError):
        return {}  # not ours to keep: rewritten from what this run verified


def check_archive(release: Release, path: Path, limits: extract.Limits = extract.Limits()) -> None:
    """Refuse a tarball an install would refuse (unsafe members, missing or ambiguous binaries)."""
    runtime_plugins.get(release.runtime).check_archive(release, path, limits)


def _present(dest: Path, sidecar: Path, release: Release, f) -> bool:
    try:
        return (
            dest.is_file()
            and sidecar.read_text() == f.digest.sidecar_text(f.name)
            and file_digest(dest, f.digest.algo) == f.digest.hex
        )
    except OSError:
        return False


def check_private(root: Path) -> None:
    """Refuse a DIR (or any directory in it) that another user owns or may write to."""
    if not root.exists():
        return  # created by us below
    for d in [root, *(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())]:
        st = d.stat()
        if st.st_uid not in (0, os.geteuid()):
            problem = f"owned by uid {st.st_uid}"
        elif st.st_mode & 0o022:
            problem = f"writable by {'others' if st.st_mode & 0o002 else 'its group'} (mode {st.st_mode & 0o7777:04o})"
        else:
            continue
        raise HostError(
            f"bundle directory {d} is {problem}; another user could plant links there that nodeagent would write through",
            f"use a directory only you can write to (e.g. `install -d -m 0755 {root}`), or fix its owner and mode",
        )


def write_bundle(settings, runtimes: list[str], arches: list[str], directory: str, progress="auto") -> BundleResult:
    """Download and verify each runtime × arch release into `directory` in the mirror layout."""
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise HostError(f"bundle target {directory} exists and is not a directory", "pass a new or existing directory")
    check_private(root)
    release_listing.check_url(settings.kata_release_listing)  # a bad setting is refused even if unused
    pinned = pins.load(settings.pins)
    fetcher = Fetcher(fetch_options(settings))
    result = BundleResult(str(root))
    staged: list[tuple[Path, Path, Path, str]] = []  # (new, dest, sidecar, sidecar text)
    try:
        with Journal() as journal:
            releases = []
            for runtime in runtimes:
                plugin = runtime_plugins.get(runtime)
                opts = plugin.options(settings)
                for arch in arches:
                    releases.append(
                        resolve(fetcher, None, runtime, plugin.version(opts), arch, settings.mirror,
                                plugin.operator_digest(opts), pinned, listing=settings.kata_release_listing)
                    )
            journal.mkdirs(root)
            for release in releases:
                for f in release.files:
                    rel = release.mirror_relpath(f.name)
                    dest = root / rel
                    sidecar = dest.with_name(f.name + f.digest.sidecar_suffix())
                    entry = {"path": rel, "digest": str(f.digest), "action": "present"}
                    if not _present(dest, sidecar, release, f):
                        journal.mkdirs(dest.parent)
                        new = dest.with_name(f.name + NEW_SUFFIX)
                        show = tty_progress(f"{release.runtime} {f.name}") if progress == "auto" else progress
                        journal.added(new)
                        fetcher.fetch(f.location, new, f.digest, show, mode=0o644)  # a mirror others serve
                        check_archive(release, new)
                        staged.append((new, dest, sidecar, f.digest.sidecar_text(f.name)))
                        entry["action"] = "download"
                    entry["size"] = (dest if entry["action"] == "present" else new).stat().st_size
                    result.files.append(entry)
                    result.files.append({"path": str(Path(rel).with_name(sidecar.name)), "digest": None, "action": entry["action"]})
            pins_file = pins.pins_path_for(root)
            before = pins_file.read_bytes() if pins_file.is_file() and not pins_file.is_symlink() else None
            digests = {**_bundled_pins(pins_file, before), **{r.mirror_relpath(f.name): f.digest for r in releases for f in r.files}}
            atomic_write(pins_file, pins.render(digests).encode(), mode=0o644)
            journal.on_rollback(lambda: atomic_write(pins_file, before) if before is not None else pins_file.unlink(missing_ok=True))
            result.pins = str(pins_file)
            for new, dest, sidecar, text in staged:
                atomic_write(sidecar, text.encode())
                os.replace(new, dest)
    finally:
        fetcher.close()
    return result
