"""Prove an edit changes nothing but our handlers, with containerd's own eyes.

`config dump` of the original chain and of the candidate chain (both by the real binary)
must be equal once the tables we own are taken out: the handlers this plan adds or
replaces, the built-in `runc` we made explicit on 1.x, and the `imports` list (it names
temp copies). Values equal to Go's zero value count as absent: containerd 1.x prints a
runtime's whole options struct once a handler is written out. Anything else that differs
(a planner bug, a containerd migration rewriting a setting) refuses the install.
"""

from __future__ import annotations

from typing import Any

from nodeagent.containerd import model
from nodeagent.containerd.validate import effective_config
from nodeagent.errors import ConfigError
from nodeagent.host import HostRoot

MAX_LISTED = 6


def meaningful(value: Any) -> Any:
    """Drop Go zero values (recursively): absent and zero are the same setting to containerd."""
    if isinstance(value, dict):
        kept = {k: meaningful(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if not _is_zero(v)}
    return value


def _is_zero(value: Any) -> bool:
    if value is None or value is False:
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value == 0
    return value in ("", {}, [])


def differences(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Dotted paths whose value differs (`a.b added`, `a.b removed`, `a.b changed`)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[str] = []
        for key in sorted(set(before) | set(after), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in after:
                out.append(f"{path} removed")
            elif key not in before:
                out.append(f"{path} added")
            else:
                out += differences(before[key], after[key], path)
        return out
    return [] if before == after else [f"{prefix} changed ({before!r} -> {after!r})"]


def _without_owned(dump: dict[str, Any], owned: set[str]) -> dict[str, Any]:
    data = meaningful(dump)
    data.pop("imports", None)
    version = model.config_version(dump.get("version"))
    node: Any = data
    for key in model.runtimes_table_path(version):
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        for name in owned:
            node.pop(name, None)
    return data


def unexpected_changes(before: dict[str, Any], after: dict[str, Any], owned: set[str]) -> list[str]:
    """What differs between two `config dump`s besides the handlers in `owned`."""
    return differences(_without_owned(before, owned), _without_owned(after, owned))


def prove_only_ours(host: HostRoot, config_path: str, after: dict, owned: set[str],
                    binary: str, baseline: dict[str, bytes | None] | None = None) -> str | None:
    """Refuse (ConfigError) when the candidate's effective config `after` (its `config dump`)
    differs from today's beyond `owned`.

    `baseline`: planned contents that count as "before" (our own retired files already gone).
    Returns a note when there is nothing to compare with (containerd cannot load today's config).
    """
    try:
        before = effective_config(host, config_path, dict(baseline or {}), binary)
    except ConfigError as exc:
        return f"containerd cannot load the current config ({exc.message}); only the new one was checked"
    changed = unexpected_changes(before, after, owned)
    if changed:
        listed = "; ".join(changed[:MAX_LISTED]) + (f"; and {len(changed) - MAX_LISTED} more" if len(changed) > MAX_LISTED else "")
        raise ConfigError(
            f"the planned edit would change containerd's effective config beyond nodeagent's handlers: {listed}",
            "nothing was changed; this is a nodeagent bug or a config containerd rewrites on load; "
            "run `nodeagent plan` and report the diff",
        )
    return None
