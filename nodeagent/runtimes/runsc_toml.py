"""gVisor's /etc/containerd/runsc.toml: the shim's options file with a `[runsc_config]` table.

Every key in `[runsc_config]` becomes a runsc flag. nodeagent owns these:
- `platform` (systrap or kvm from detection, or the `gvisor_platform` setting);
- `systemd-cgroup`, which must match runc's `SystemdCgroup` or sandboxes fail to start
  (google/gvisor#7671);
- `net-raw` ("false" unless `gvisor_net_raw`: raw sockets stay off, as runsc's default);
- `debug` and `debug-log` only while `gvisor_debug_log` is set. They carry a `# nodeagent`
  comment, so once the setting is gone nodeagent removes the ones it wrote and never an
  operator's own.
Everything else an operator put in the file (other flags, comments) is kept: the file is
edited with tomlkit, never regenerated.
"""

from __future__ import annotations

import re
from typing import Any

import tomlkit
import tomlkit.exceptions

from nodeagent.containerd import edit, tomlparse
from nodeagent.errors import ConfigError

PATH = "/etc/containerd/runsc.toml"
HEADER_COMMENT = ("gVisor runsc options for containerd-shim-runsc-v1 "
                  "(managed by nodeagent: platform, systemd-cgroup, net-raw, debug logging)")
# marks a key nodeagent wrote for an opt-in setting, so it can take it back when the setting goes
MARK = "nodeagent: gvisor_debug_log"
DEBUG_KEYS = ("debug", "debug-log")
PLATFORMS = ("systrap", "kvm", "ptrace")


def desired_keys(platform: str, systemd_cgroup: bool, net_raw: bool = False,
                 debug_log: str | None = None) -> dict[str, str]:
    """The `[runsc_config]` keys nodeagent sets; runsc flags are strings in this file."""
    keys = {"platform": platform}
    if systemd_cgroup:
        keys["systemd-cgroup"] = "true"
    keys["net-raw"] = "true" if net_raw else "false"
    if debug_log:
        keys.update({"debug": "true", "debug-log": debug_log})
    return keys


def render(existing: bytes | None, platform: str, systemd_cgroup: bool, path: str, *, net_raw: bool = False,
           debug_log: str | None = None) -> bytes:
    """New runsc.toml bytes: our keys merged into whatever is there (identical bytes if nothing to do)."""
    wanted = desired_keys(platform, systemd_cgroup, net_raw, debug_log)
    if existing is None:
        doc = tomlkit.document()
        doc.add(tomlkit.comment(HEADER_COMMENT))
        table = tomlkit.table()
        for key, value in wanted.items():
            table[key] = value
            if key in DEBUG_KEYS:
                table.value.item(key).comment(MARK)
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
        if table.get(key) != value:  # an operator's own equal key stays theirs (unmarked)
            added = key not in table
            table[key] = value
            if added and indent:  # like the keys already there (gVisor's docs indent by two)
                table.value.item(key).indent(indent)
            if key in DEBUG_KEYS:
                table.value.item(key).comment(MARK)
    if not systemd_cgroup and str(table.get("systemd-cgroup", "false")).lower() == "true":
        # runc uses cgroupfs here, so runsc must too (gvisor#7671)
        del table["systemd-cgroup"]
    for key in DEBUG_KEYS:
        if key not in wanted and key in table and marked(table, key):
            del table[key]  # debug logging was ours and is off now; an operator's own stays
    new = doc.as_string()
    if new == text:
        return existing
    return edit.encode(new, style)


def marked(table: Any, key: str) -> bool:
    """Whether nodeagent wrote this key for an opt-in setting (its trailing comment says so)."""
    try:
        return MARK in (table.value.item(key).trivia.comment or "")
    except (KeyError, AttributeError):
        return False


def _key_indent(text: str) -> int:
    """Spaces before the first key of [runsc_config] (0 when it has none)."""
    match = re.search(r"^[ \t]*\[runsc_config\][^\n]*\n(?:[ \t]*(?:#[^\n]*)?\n)*( *)[A-Za-z0-9_\"'-]", text, re.M)
    return len(match.group(1)) if match else 0
