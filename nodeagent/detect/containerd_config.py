"""Read-only facts about a containerd config: does it parse, its schema version, its
imports, the handlers it registers and runc's cgroup driver.

Import chains and handler merge rules belong to nodeagent.containerd.imports/inspect;
this module only turns their errors into facts with reasons (detection never raises).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nodeagent.containerd import model
from nodeagent.containerd.tomlparse import parse
from nodeagent.containerd.imports import LoadedFile, load_chain, read_host_file
from nodeagent.containerd.inspect import (containerd_major, decoded_option, default_runtime_name,
                                         effective_containerd_table, registered_handlers)
from nodeagent.dicts import dig
from nodeagent.errors import ConfigError
from nodeagent.host import HostRoot


@dataclass
class ConfigFacts:
    path: str  # host path of the main file
    exists: bool
    data: dict[str, Any] | None = None
    version: int | None = None  # schema version (missing key = 1); None when unknown
    error: str | None = None  # why the main file is unusable
    chain: list[LoadedFile] = field(default_factory=list)  # main + imports in load order
    chain_error: str | None = None  # an import that is missing or broken
    handlers: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_runtime: str = "runc"  # default_runtime_name as containerd merges it

    @property
    def ok(self) -> bool:
        return self.exists and self.error is None and self.chain_error is None


def read(host: HostRoot, path: str, containerd_version: str | None = None) -> ConfigFacts:
    raw = read_host_file(host, path)
    if raw is None:
        exists = host.exists(path)
        return ConfigFacts(path, exists, error="unreadable" if exists else None)
    facts = ConfigFacts(path, True)
    try:
        facts.data = parse(raw, path)
        facts.version = model.config_version(facts.data.get("version"))
    except ConfigError as exc:
        facts.error = exc.message
        return facts
    try:
        # containerd 2.x skips a missing plain import, 1.x refuses to start (imports.load_chain)
        facts.chain = load_chain(host, path, missing_ok=containerd_major(containerd_version, facts.version) >= 2)
        facts.handlers = registered_handlers(host, path, containerd_version)
        major = containerd_major(containerd_version, max(item.version for item in facts.chain))
        facts.default_runtime = default_runtime_name(facts.chain, major)
    except ConfigError as exc:
        facts.chain_error = exc.message
    return facts


def runc_systemd_cgroup(facts: ConfigFacts) -> bool | None:
    """The default runtime's SystemdCgroup as containerd decodes it (runc's when the default has no
    table); None = not set (containerd's default, false)."""
    table = facts.handlers.get(facts.default_runtime) or facts.handlers.get("runc") or {}
    value = decoded_option(table.get("options"), "SystemdCgroup")
    if isinstance(value, bool):
        return value
    # schema 1's legacy switch for the whole CRI plugin
    for item in facts.chain:
        legacy = dig(item.data, "plugins", "cri", "systemd_cgroup") if item.version == 1 else None
        if isinstance(legacy, bool):
            value = legacy
    return value if isinstance(value, bool) else None


def grpc_address(facts: ConfigFacts) -> str | None:
    value = dig(facts.data, "grpc", "address")
    # a template's unexpanded placeholder (microk8s' ${SNAP_COMMON}) is no socket path
    return value if isinstance(value, str) and value and "${" not in value else None


# the devmapper snapshotter's plugin table: schema 1 used the short id, 2 and later the full one
_DEVMAPPER = {1: ("plugins", "devmapper")}
_DEVMAPPER_ID = ("plugins", "io.containerd.snapshotter.v1.devmapper")


def snapshotters(facts: ConfigFacts, containerd_version: str | None = None) -> dict[str, Any]:
    """{"devmapper_pool": the devmapper snapshotter's pool_name (None: not configured),
    "cri_snapshotter": the CRI plugin's default snapshotter (None: containerd's, overlayfs)}.

    containerd 1.x replaces a plugin's whole table with a drop-in's (containerd#5837), 2.x merges."""
    if not facts.ok or not facts.chain:
        return {"devmapper_pool": None, "cri_snapshotter": None}
    major = containerd_major(containerd_version, max(item.version for item in facts.chain))
    pool = None
    for item in facts.chain:
        table = dig(item.data, *_DEVMAPPER.get(item.version, _DEVMAPPER_ID))
        if isinstance(table, dict):
            value = table.get("pool_name")
            pool = value if isinstance(value, str) and value else (None if major < 2 else pool)
    cri = effective_containerd_table(facts.chain, major).get("snapshotter")
    return {"devmapper_pool": pool, "cri_snapshotter": cri if isinstance(cri, str) and cri else None}
