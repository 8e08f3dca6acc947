"""Where other tools' containerd files collide with ours or with each other (doctor `config-clashes`).

Read-only and pure Python. Four kinds, each a one-line finding:

* the same handler defined in more than one loaded file (2.x merges them key by key, 1.x keeps
  only the file whose CRI section wins: either way one file's edit silently loses);
* an old-schema (v1/v2) drop-in next to a v3+ file: containerd 2.x ignores it without a word;
* `.toml` files in `conf.d/` or `config.d/` beside the config that no `imports` entry loads
  (the other directory's name is imported: a `config.d` vs `conf.d` mix-up);
* nodeagent's handlers living in a file another tool owns, which that tool rewrites or deletes
  (nvidia-ctk's `conf.d/99-nvidia.toml` holds the whole CRI section on nvidia nodes).
"""

from __future__ import annotations

import fnmatch
import posixpath

from nodeagent import state as state_mod
from nodeagent.containerd import edit
from nodeagent.containerd.imports import LoadedFile, absolute_import, glob_matches, is_glob
from nodeagent.host import HostRoot

DROPIN_DIRS = ("conf.d", "config.d")
# file name pattern -> the tool that writes (and may delete) it
OWNERS = {
    "99-nvidia.toml": "nvidia-ctk (nvidia-container-toolkit; `nvidia-ctk runtime configure` writes it, its cleanup deletes it)",
    "*nvidia*.toml": "nvidia-ctk (nvidia-container-toolkit)",
}


def owner_of(path: str) -> str | None:
    name = posixpath.basename(path)
    for pattern, owner in OWNERS.items():
        if fnmatch.fnmatchcase(name, pattern):
            return owner
    return None


def duplicate_handlers(chain: list[LoadedFile]) -> list[str]:
    seen: dict[str, list[str]] = {}
    for item in chain:
        for name in edit.runtimes_of(item.data, item.version):
            seen.setdefault(name, []).append(item.path)
    return [f"handler {name!r} is defined in {len(paths)} files: {', '.join(paths)}"
            for name, paths in sorted(seen.items()) if len(paths) > 1]


def ignored_old_schema(chain: list[LoadedFile]) -> list[str]:
    newest = max((item.version for item in chain), default=1)
    if newest < 3:
        return []
    return [f"{item.path} is a version {item.version} drop-in next to a version {newest} config: "
            "containerd 2.x ignores it" for item in chain[1:] if item.version < 3]


def unimported_dropin_dirs(host: HostRoot, chain: list[LoadedFile]) -> list[str]:
    if not chain:
        return []
    main = chain[0]
    loaded = {item.path for item in chain}
    patterns = [absolute_import(entry, main.path) for item in chain for entry in item.imports]
    out = []
    for directory in DROPIN_DIRS:
        full = posixpath.join(posixpath.dirname(main.path), directory)
        stray = [f"{full}/{n}" for n in sorted(host.listdir(full)) if n.endswith(".toml")]
        stray = [p for p in stray if p not in loaded and not any(p == pat or (is_glob(pat) and glob_matches(pat, p))
                                                                 for pat in patterns)]
        if stray:
            imported = ", ".join(patterns) or "nothing"
            out.append(f"{', '.join(stray)} not loaded: {main.path} imports {imported} (conf.d vs config.d?)")
    return out


def ours_in_foreign_files(host: HostRoot, chain: list[LoadedFile]) -> list[str]:
    """Our handlers (state.json) in a file we did not create and another tool owns."""
    try:
        state = state_mod.load(host)
    except Exception:  # noqa: BLE001 - a corrupt state file is another check's finding
        return []
    ours = set(state.handlers)
    out = []
    for item in chain:
        owner = owner_of(item.path)
        record = state.files.get(item.path)
        if owner is None or (record is not None and record.created):
            continue
        here = sorted(ours & set(edit.runtimes_of(item.data, item.version)))
        if here:
            out.append(f"nodeagent's handler(s) {', '.join(here)} live in {item.path}, owned by {owner}")
    return out


def find_clashes(host: HostRoot, chain: list[LoadedFile]) -> list[str]:
    return (duplicate_handlers(chain) + ignored_old_schema(chain) + unimported_dropin_dirs(host, chain)
            + ours_in_foreign_files(host, chain))
