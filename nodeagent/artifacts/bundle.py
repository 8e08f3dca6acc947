"""`nodeagent bundle`: write an offline mirror (artifacts + digest files) for air-gapped nodes.

Every artifact is verified while downloading, and release tarballs are checked as an
install would check them (safe members, the expected binaries present exactly once), so
a bad bundle is caught on the connected machine rather than on the node. Files are
fetched to temp names first and renamed into the layout only when all of them passed;
a failed run leaves DIR as it was.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from nodeagent.artifacts import catalog, extract, links
from nodeagent.artifacts.api import fetch_options
from nodeagent.artifacts.digest import file_digest
from nodeagent.artifacts.download import Fetcher
from nodeagent.artifacts.progress import tty_progress
from nodeagent.artifacts.release import GVISOR_TARBALL_LAYOUT, KATA_LAYOUT, Release, resolve
from nodeagent.artifacts.txn import Transaction
from nodeagent.errors import ArtifactError, HostError
from nodeagent.fsutil import atomic_write

NEW_SUFFIX = ".nodeagent-new"


@dataclass
class BundleResult:
    directory: str
    files: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"dir": self.directory, "files": self.files}


def check_archive(release: Release, path: Path, limits: extract.Limits = extract.Limits()) -> None:
    """Refuse a tarball an install would refuse (unsafe members, missing or ambiguous binaries)."""
    if release.layout == GVISOR_TARBALL_LAYOUT:
        entries = extract.scan(path, limits, release.files[0].name)
        extract.find_unique(entries, catalog.RUNSC, release.files[0].name)
        extract.find_unique(entries, catalog.GVISOR_SHIM, release.files[0].name)
    elif release.layout == KATA_LAYOUT:
        entries = extract.scan(path, limits, release.files[0].name, host_trees=("/opt/kata",))
        tree = extract.find_tree(entries, ("opt", "kata"), release.files[0].name)
        if not any(e.name == f"{tree}/bin/{catalog.KATA_SHIM}" for e in entries):
            raise ArtifactError(
                f"refusing {release.files[0].name}: it has no {tree}/bin/{catalog.KATA_SHIM}",
                "the archive is not a Kata static release; use the upstream kata-static tarball",
            )
        links.check_entries(entries, tree, release.files[0].name, host_trees=("/opt/kata",))


def _present(dest: Path, sidecar: Path, release: Release, f) -> bool:
    try:
        return (
            dest.is_file()
            and sidecar.read_text() == f.digest.sidecar_text(f.name)
            and file_digest(dest, f.digest.algo) == f.digest.hex
        )
    except OSError:
        return False


def write_bundle(settings, runtimes: list[str], arches: list[str], directory: str, progress="auto") -> BundleResult:
    """Download and verify each runtime × arch release into `directory` in the mirror layout."""
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise HostError(f"bundle target {directory} exists and is not a directory", "pass a new or existing directory")
    fetcher = Fetcher(fetch_options(settings))
    result = BundleResult(str(root))
    staged: list[tuple[Path, Path, Path, str]] = []  # (new, dest, sidecar, sidecar text)
    try:
        with Transaction() as txn:
            releases = []
            for runtime in runtimes:
                version = settings.gvisor_version if runtime == "gvisor" else settings.kata_version
                for arch in arches:
                    releases.append(
                        resolve(fetcher, None, runtime, version, arch, settings.mirror,
                                settings.kata_sha256 if runtime == "kata" else None)
                    )
            txn.mkdirs(root)
            for release in releases:
                for f in release.files:
                    rel = release.mirror_relpath(f.name)
                    dest = root / rel
                    sidecar = dest.with_name(f.name + f.digest.sidecar_suffix())
                    entry = {"path": rel, "digest": str(f.digest), "action": "present"}
                    if not _present(dest, sidecar, release, f):
                        txn.mkdirs(dest.parent)
                        new = dest.with_name(f.name + NEW_SUFFIX)
                        show = tty_progress(f"{release.runtime} {f.name}") if progress == "auto" else progress
                        txn.added(new)
                        fetcher.fetch(f.location, new, f.digest, show, mode=0o644)  # a mirror others serve
                        check_archive(release, new)
                        staged.append((new, dest, sidecar, f.digest.sidecar_text(f.name)))
                        entry["action"] = "download"
                    entry["size"] = (dest if entry["action"] == "present" else new).stat().st_size
                    result.files.append(entry)
                    result.files.append({"path": str(Path(rel).with_name(sidecar.name)), "digest": None, "action": entry["action"]})
            for new, dest, sidecar, text in staged:
                atomic_write(sidecar, text.encode())
                os.replace(new, dest)
    finally:
        fetcher.close()
    return result
