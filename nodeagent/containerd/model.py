"""What containerd's config means, in one place: version -> CRI plugin id, handler tables.

Every other module asks here where runtimes live for a config version, and how a handler
table is built; which handlers a runtime needs is its plug-in's word (`nodeagent/runtimes/`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from nodeagent.errors import ConfigError, UsageError

# config `version` -> the CRI plugin table that holds `containerd.runtimes`
# (none/1: legacy `plugins.cri`; 2: containerd 1.x/2.x v2 schema; 3/4: containerd 2.x split CRI plugins)
_CRI_RUNTIME_PLUGIN = {
    1: "cri",
    2: "io.containerd.grpc.v1.cri",
    3: "io.containerd.cri.v1.runtime",
    4: "io.containerd.cri.v1.runtime",
}
SUPPORTED_VERSIONS = tuple(_CRI_RUNTIME_PLUGIN)

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # fullmatch: `$` would allow "runsc\n"


def config_version(value: Any) -> int:
    """The schema version of a parsed config (`version` key; missing means 1)."""
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"containerd config has version = {value!r}, which is not an integer",
            "write the version as a bare integer, e.g. `version = 2` (containerd rejects a string)",
        )
    if value not in _CRI_RUNTIME_PLUGIN:
        raise ConfigError(
            f"containerd config version {value} is not supported",
            "supported versions: " + ", ".join(map(str, SUPPORTED_VERSIONS)),
        )
    return int(value)


def cri_runtime_plugin(version: int) -> str:
    return _CRI_RUNTIME_PLUGIN[config_version(version)]


def runtimes_table_path(version: int) -> tuple[str, ...]:
    """Key path of the table holding runtime handlers for this config version."""
    return ("plugins", cri_runtime_plugin(version), "containerd", "runtimes")


def validate_handler_name(name: str) -> str:
    """A RuntimeClass handler must be a DNS label (Kubernetes validation)."""
    if not isinstance(name, str) or not _DNS_LABEL.fullmatch(name):
        raise UsageError(
            f"invalid handler name {name!r}",
            "a handler must be a DNS label: lowercase letters, digits and '-', at most 63 characters",
        )
    return name


@dataclass(frozen=True)
class HandlerSpec:
    """One runtime handler as it must appear under `containerd.runtimes.<name>`."""

    name: str
    runtime: str  # the runtime plug-in that owns it (nodeagent.runtimes NAMES)
    runtime_type: str
    keys: dict[str, Any] = field(default_factory=dict)  # handler-level keys
    options: dict[str, Any] | None = None  # the `.options` table, None for none
    # handler-level keys nodeagent writes but does not require of someone else's table of the same
    # name to adopt it (a table written by the runtime's own docs that predates the key)
    adoptable_without: tuple[str, ...] = ()

    @property
    def shim_binary(self) -> str:
        """What containerd looks for on its PATH for this handler."""
        return shim_binary_for(self.runtime_type)

    def required_table(self) -> dict[str, Any]:
        """What an existing handler of this name nodeagent did not write must have to be adopted."""
        return {k: v for k, v in self.table().items() if k not in self.adoptable_without}

    def table(self) -> dict[str, Any]:
        body: dict[str, Any] = {"runtime_type": self.runtime_type, **self.keys}
        if self.options is not None:
            body["options"] = dict(self.options)
        return body


def shim_binary_for(runtime_type: str) -> str:
    """containerd maps io.containerd.<name>.<ver> to the binary containerd-shim-<name>-<ver>."""
    parts = runtime_type.split(".")
    if len(parts) < 4 or parts[0] != "io" or parts[1] != "containerd":
        raise UsageError(f"unexpected runtime_type {runtime_type!r}", "use io.containerd.<name>.<version>")
    return "containerd-shim-" + "-".join(parts[2:])
