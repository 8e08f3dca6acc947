"""gVisor's /etc/containerd/runsc.toml: the shim's options file with a `[runsc_config]` table.

Every key in `[runsc_config]` becomes a runsc flag. nodeagent owns two of them:
`platform` (systrap or kvm, from detection) and `systemd-cgroup`, which must match
runc's `SystemdCgroup` or sandboxes fail to start (google/gvisor#7671). Everything
else an operator put in the file (debug logs, other flags, comments) is kept:
the file is edited with tomlkit, never regenerated.
"""

from __future__ import annotations

import re
from typing import Any

import tomlkit
import tomlkit.exceptions

from nodeagent.containerd import edit, tomlparse
from nodeagent.errors import ConfigError

PATH = "/etc/containerd/runsc.toml"
HEADER_COMMENT = "gVisor runsc options for containerd-shim-runsc-v1 (managed by nodeagent: platform, systemd-cgroup)"


def desired_keys(platform: str, systemd_cgroup: bool) -> dict[str, str]:
    """The `[runsc_config]` keys nodeagent sets; runsc flags are strings in this file."""
    keys = {"platform": platform}
    if systemd_cgroup:
        keys["systemd-cgroup"] = "true"
    return keys


def render(existing: bytes | None, platform: str, systemd_cgroup: bool, path: str) -> bytes:
    """New runsc.toml bytes: our keys merged into whatever is there (identical bytes if nothing to do)."""
    wanted = desired_keys(platform, systemd_cgroup)
    if existing is None:
        doc = tomlkit.document()
        doc.add(tomlkit.comment(HEADER_COMMENT))
        table = tomlkit.table()
        for key, value in wanted.items():
            table[key] = value
        doc["runsc_config"] = table
        return doc.as_string().encode()
    text, style = edit.decode(existing, path)
    tomlparse.parse(text, path)  # a clear error for broken TOML
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", "fix the file's syntax, then run again") from None
    table: Any = doc.get("runsc_config")
    if table is None:
        table = tomlkit.table()
        doc["runsc_config"] = table
    elif not isinstance(table, dict):
        raise ConfigError(f"{path}: runsc_config is not a table", "make it a [runsc_config] table")
    indent = _key_indent(text)
    for key, value in wanted.items():
        if table.get(key) != value:
            added = key not in table
            table[key] = value
            if added and indent:  # like the keys already there (gVisor's docs indent by two)
                table.value.item(key).indent(indent)
    if not systemd_cgroup and str(table.get("systemd-cgroup", "false")).lower() == "true":
        # runc uses cgroupfs here, so runsc must too (gvisor#7671)
        del table["systemd-cgroup"]
    new = doc.as_string()
    if new == text:
        return existing
    return edit.encode(new, style)


def _key_indent(text: str) -> int:
    """Spaces before the first key of [runsc_config] (0 when it has none)."""
    match = re.search(r"^[ \t]*\[runsc_config\][^\n]*\n(?:[ \t]*(?:#[^\n]*)?\n)*( *)[A-Za-z0-9_\"'-]", text, re.M)
    return len(match.group(1)) if match else 0
