"""What handlers containerd would serve from a config on disk, following `imports`.

Read-only and pure Python (no containerd binary needed), so `doctor` and the planner
share it. The merge rules were checked against real containerd 1.6.20, 1.7.24 and
2.1.9 `config dump` (tests/integration/test_containerd_config_inspect.py):

* containerd 1.x: a file in `imports` that has the CRI plugin table *replaces* the
  whole CRI table (containerd#5837). v1 files use the short id `cri`; a v3 file's
  `io.containerd.cri.v1.runtime` table means nothing to 1.x.
* containerd 2.x: tables deep-merge. The main file is always migrated; the merged
  schema version is the highest of all files, and a drop-in written for schema 1 or
  2 only counts while that merged version is exactly 2 — next to any v3 file (or
  when every file is v1) it is silently ignored.
"""

from __future__ import annotations

import copy
from typing import Any

from nodeagent.containerd import model, tomlparse
from nodeagent.containerd.imports import LoadedFile, load_chain, read_host_file
from nodeagent.dicts import dig
from nodeagent.errors import ConfigError
from nodeagent.host import HostRoot



def _main_version(host: HostRoot, config_path: str, overrides: dict[str, bytes | None] | None) -> int:
    """The main file's schema version, for the merge rules when the daemon's version is unknown
    (a v3 main file means containerd 2.x, which skips a missing plain import). A file that does
    not parse counts as 1: load_chain then reports it with its own message."""
    raw = overrides[config_path] if overrides and config_path in overrides else read_host_file(host, config_path)
    try:
        return model.config_version(tomlparse.parse(raw, config_path).get("version")) if raw else 1
    except ConfigError:
        return 1


def containerd_major(containerd_version: str | None, main_version: int) -> int:
    """1 or 2; without a known daemon version, a v3+ config implies 2.x and older ones 1.x."""
    if containerd_version:
        head = containerd_version.lstrip("v").split(".")[0]
        if head.isdigit():
            return 2 if int(head) >= 2 else 1
    return 2 if main_version >= 3 else 1


def decoded_option(options: Any, field: str) -> Any:
    """A runtime option as containerd decodes it into its options struct, or None.

    containerd 1.x (go-toml v1) and 2.x (go-toml v2) both match a struct field by exact name
    first, then case-insensitively, like encoding/json: kubespray's `systemdCgroup = true` turns
    the systemd driver on. Checked for real on 1.7.24 and 2.1.9: runc refuses a cgroupfs path for
    `systemdCgroup`/`systemdcgroup` exactly as for `SystemdCgroup`
    (tests/integration/test_containerd_option_keys.py).
    """
    if not isinstance(options, dict):
        return None
    if field in options:
        return options[field]
    for key, value in options.items():
        if isinstance(key, str) and key.lower() == field.lower():
            return value
    return None


def cri_table_v1x(item: LoadedFile) -> dict[str, Any] | None:
    """The CRI plugin table a file gives containerd 1.x, or None when it has none."""
    if item.version >= 3:
        return None
    table = dig(item.data, "plugins", model.cri_runtime_plugin(item.version))
    return table if isinstance(table, dict) else None


def deep_merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def effective_containerd_table(chain: list[LoadedFile], major: int) -> dict[str, Any]:
    """The CRI plugin's `containerd` table (runtimes, default_runtime_name) as containerd merges it."""
    if not chain:
        return {}
    if major < 2:
        cri: dict[str, Any] | None = None
        for item in chain:
            table = cri_table_v1x(item)
            if table is not None:
                cri = table  # replaces, does not merge (containerd#5837)
        merged = dig(cri, "containerd")
        return copy.deepcopy(merged) if isinstance(merged, dict) else {}
    merged_version = max(item.version for item in chain)
    merged = {}
    for index, item in enumerate(chain):
        if index > 0 and item.version < 3 and merged_version != 2:
            continue  # old-schema drop-in: containerd 2.x only migrates it when the merged version is 2
        table = dig(item.data, "plugins", model.cri_runtime_plugin(item.version), "containerd")
        if isinstance(table, dict):
            deep_merge(merged, table)
    return merged


def effective_runtimes(chain: list[LoadedFile], major: int) -> dict[str, dict[str, Any]]:
    """handler name -> its effective table, from already-loaded files."""
    runtimes = effective_containerd_table(chain, major).get("runtimes")
    if not isinstance(runtimes, dict):
        return {}
    return {name: copy.deepcopy(t) for name, t in runtimes.items() if isinstance(t, dict)}


def default_runtime_name(chain: list[LoadedFile], major: int) -> str:
    """The handler pods without a RuntimeClass use (containerd's default: runc)."""
    name = effective_containerd_table(chain, major).get("default_runtime_name")
    return name if isinstance(name, str) and name else "runc"


def registered_handlers(
    host: HostRoot,
    config_path: str,
    containerd_version: str | None = None,
    overrides: dict[str, bytes | None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Handler name -> table as containerd would see it, following `imports`.

    `containerd_version` ("1.7.24", "2.1.9") picks the merge rules; without it the main
    highest schema version among the files decides (3+ means containerd 2.x). `overrides` lets a caller
    ask about candidate contents (host path -> bytes, None = deleted) without writing.
    Raises ConfigError (exit 2, with a hint) for unreadable or broken files.
    """
    chain = load_chain(host, config_path, overrides,
                       missing_ok=containerd_major(containerd_version, _main_version(host, config_path, overrides)) >= 2)
    return effective_runtimes(chain, containerd_major(containerd_version, max(item.version for item in chain)))
