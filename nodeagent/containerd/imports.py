"""Which files containerd actually loads: the main config plus its `imports`, in order.

containerd expands each `imports` entry (a glob when it has * ? or [, sorted the way
Go's filepath.Glob sorts; relative paths are relative to the importing file's
directory), loads imported files' own imports too, and skips files already loaded.
"""

from __future__ import annotations

import glob
import posixpath
from dataclasses import dataclass, field
from typing import Any

from nodeagent.containerd import model, tomlparse
from nodeagent.errors import ConfigError, HostError
from nodeagent.host import HostRoot

GLOB_CHARS = "*?["


@dataclass
class LoadedFile:
    """One config file as containerd would read it."""

    path: str  # host path
    data: dict[str, Any]
    version: int
    imports: list[str] = field(default_factory=list)  # the raw `imports` entries


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in GLOB_CHARS)


def absolute_import(entry: str, importing_file: str) -> str:
    """An `imports` entry as an absolute host path (relative ones are relative to the importer)."""
    if posixpath.isabs(entry):
        return posixpath.normpath(entry)
    return posixpath.normpath(posixpath.join(posixpath.dirname(importing_file), entry))


def expand_import(
    host: HostRoot, entry: str, importing_file: str, overrides: dict[str, bytes | None] | None = None
) -> list[str]:
    """Host paths an `imports` entry names; a glob may match nothing, a plain path may be missing.

    `overrides` are planned files: ones to be created join the glob's matches, deleted ones leave.
    """
    pattern = absolute_import(entry, importing_file)
    if not is_glob(pattern):
        return [pattern]
    matches = {host.to_host(m) for m in glob.glob(str(host.path(pattern)))}
    for candidate, content in (overrides or {}).items():
        if glob_matches(pattern, candidate):
            if content is None:
                matches.discard(candidate)
            else:
                matches.add(candidate)
    return sorted(matches)


def read_host_file(host: HostRoot, path: str) -> bytes | None:
    """File bytes, following symlinks inside the host root (an absolute link stays under --root)."""
    try:
        return host.resolve(path).read_bytes()
    except (OSError, HostError):
        return None


def load_file(host: HostRoot, path: str, raw: bytes | None = None) -> LoadedFile:
    if raw is None:
        raw = read_host_file(host, path)
        if raw is None:
            raise ConfigError(f"cannot read containerd config {path}", "check the path (--containerd-config) and --root")
    data = tomlparse.parse(raw, path)
    version = model.config_version(data.get("version"))
    imports = data.get("imports", [])
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        raise ConfigError(f"{path}: `imports` must be a list of strings", "fix the `imports` line")
    return LoadedFile(path=path, data=data, version=version, imports=list(imports))


def load_chain(
    host: HostRoot, config_path: str, overrides: dict[str, bytes | None] | None = None, *, missing_ok: bool = False
) -> list[LoadedFile]:
    """The main config and every imported file, in containerd's load order.

    `overrides` maps host paths to candidate contents (None = the file is deleted), so the
    planner can ask "what would containerd load after this change" without writing anything.
    A plain (non-glob) import of a missing file is an error, as it is for containerd 1.x;
    containerd 2.x skips it (`missing_ok`).
    """
    overrides = overrides or {}

    def read(path: str) -> bytes | None:
        if path in overrides:
            return overrides[path]
        return read_host_file(host, path)

    main_raw = read(config_path)
    if main_raw is None:
        raise ConfigError(f"cannot read containerd config {config_path}", "check the path (--containerd-config) and --root")
    loaded: list[LoadedFile] = []
    seen: set[str] = set()
    pending: list[tuple[str, str | None]] = [(config_path, None)]
    while pending:
        path, importer = pending.pop(0)
        if path in seen:
            continue
        seen.add(path)
        raw = read(path)
        if raw is None and missing_ok and importer is not None:
            continue
        if raw is None:
            raise ConfigError(
                f"{importer} imports {path}, which does not exist",
                f"create {path} or remove it from `imports` in {importer} (containerd 1.x refuses to start)",
            )
        item = load_file(host, path, raw)
        loaded.append(item)
        for entry in item.imports:
            for match in expand_import(host, entry, path, overrides):
                pending.append((match, path))
    return loaded


def glob_matches(pattern: str, path: str) -> bool:
    """Go filepath.Match semantics are close enough to fnmatch per path segment."""
    import fnmatch

    pat_parts = pattern.split("/")
    path_parts = path.split("/")
    if len(pat_parts) != len(path_parts):
        return False
    return all(fnmatch.fnmatchcase(s, p) for s, p in zip(path_parts, pat_parts))
