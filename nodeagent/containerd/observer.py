"""What containerd serves, observed once per detection pass: the handlers its config registers,
the handlers its CRI plugin serves, and whether each handler's shim is on containerd's PATH.

doctor, the node labels (kube/runtime_status), verify and converge all read this one view, so
"installed" means the same thing everywhere: registered, served and shim present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nodeagent.containerd import model
from nodeagent.containerd.cri import CriStatus
from nodeagent.detect.containerd import DEFAULT_DAEMON_PATH
from nodeagent.errors import NodeagentError
from nodeagent.facts import ContainerdFacts
from nodeagent.host import HostRoot



@dataclass
class HandlerStatus:
    """One handler as containerd has it; all three must hold before a node advertises it."""

    handler: str
    registered: bool
    served: bool
    shim_present: bool
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        return {"handler": self.handler, "registered": self.registered, "served": self.served,
                "shim_present": self.shim_present, "reason": self.reason}


def ask_cri(socket: str | None, timeout: float = 5.0) -> CriStatus:
    """One CRI status probe; a missing socket or a failed call is a status with a reason."""
    if not socket:
        return CriStatus(socket="", reason="no containerd socket")
    from nodeagent.containerd.cri import cri_status

    try:
        return cri_status(socket, timeout)
    except NodeagentError as exc:
        return CriStatus(socket=socket, reason=exc.message)


def search_path(containerd: ContainerdFacts) -> str:
    """Where containerd looks for shims (detected from its own environment, else systemd's default)."""
    return ":".join(containerd.daemon_path) if containerd.daemon_path else DEFAULT_DAEMON_PATH


@dataclass
class ContainerdView:
    """The registered handler tables, the CRI status and the shim search path, read once."""

    host: HostRoot
    registered: dict[str, dict[str, Any]] = field(default_factory=dict)
    registered_error: str | None = None  # why `registered` could not be read (None: read, or no config)
    has_config: bool = True
    cri: CriStatus = field(default_factory=lambda: CriStatus(socket=""))
    search: str = DEFAULT_DAEMON_PATH

    @property
    def served(self) -> set[str]:
        return set(self.cri.handlers) if self.cri.ok else set()

    def shim_on_path(self, runtime_type: Any) -> bool:
        """Whether the shim containerd derives from `runtime_type` is on its PATH."""
        try:
            return isinstance(runtime_type, str) and self.host.which(model.shim_binary_for(runtime_type), self.search) is not None
        except NodeagentError:
            return False

    def status(self, handler: str) -> HandlerStatus:
        table = self.registered.get(handler)
        served = handler in self.served
        if table is None:
            why = f"handler {handler!r} not registered"
            if self.registered_error:
                why = f"cannot read containerd's handlers: {self.registered_error}"
            elif not self.has_config:
                why = "no containerd config"
            return HandlerStatus(handler, False, served, False, why)
        runtime_type = table.get("runtime_type")
        shim_present = self.shim_on_path(runtime_type)
        why = None
        if not shim_present:
            why = f"shim for {runtime_type} not on containerd's PATH"
        elif not served:
            cri_reason = None if self.cri.ok else (self.cri.reason or "CRI not ready")
            why = f"not served by CRI ({cri_reason or 'containerd does not list it; restart pending?'})"
        return HandlerStatus(handler, True, served, shim_present, why)


def read_registered(host: HostRoot, containerd: ContainerdFacts) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The handler tables containerd's config (with its imports) registers, or why they could not be read."""
    if not (containerd.config_exists and containerd.config_path):
        return {}, None
    from nodeagent.containerd.inspect import registered_handlers

    try:
        return registered_handlers(host, containerd.config_path, containerd.version), None
    except NodeagentError as exc:
        return {}, exc.message


def observe(host: HostRoot, containerd: ContainerdFacts, socket: str | None, *, cri_timeout: float = 5.0) -> ContainerdView:
    """Read the config's handlers, ask CRI once (at `socket`, already joined with the root), note the PATH."""
    registered, error = read_registered(host, containerd)
    has_config = bool(containerd.config_exists and containerd.config_path)
    return ContainerdView(host, registered, error, has_config, ask_cri(socket, cri_timeout), search_path(containerd))
