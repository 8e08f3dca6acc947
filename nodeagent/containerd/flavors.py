"""Where each containerd distribution keeps its config, socket, binary, templates and drop-ins.

The containerd layer owns this table: layout decides where edits go from it, validate finds the
binary with it, and detect/flavor.py scores which flavor runs the node against it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Flavor:
    name: str
    config: str  # the file to read and edit (what containerd reads, or the source it is rendered from)
    socket: str
    binaries: tuple[str, ...] = ()  # where its containerd lives (before PATH lookup)
    templates: tuple[str, ...] = ()  # the source it is rendered from, if generated
    dropin_dir: str | None = None
    rendered: str | None = None  # the file containerd reads when `config` is rendered into it
    units: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    processes: tuple[str, ...] = ()


_RANCHER_K3S = "/var/lib/rancher/k3s/agent/etc/containerd"
_RANCHER_RKE2 = "/var/lib/rancher/rke2/agent/etc/containerd"

FLAVORS: dict[str, Flavor] = {
    # k3s renders config.toml from config.toml.tmpl (config-v3.toml.tmpl for containerd 2.x) at every start
    "k3s": Flavor(
        "k3s", f"{_RANCHER_K3S}/config.toml", "/run/k3s/containerd/containerd.sock",
        binaries=("/var/lib/rancher/k3s/data/current/bin/containerd",),
        templates=(f"{_RANCHER_K3S}/config-v3.toml.tmpl", f"{_RANCHER_K3S}/config.toml.tmpl"),
        units=("k3s.service", "k3s-agent.service"),
        files=("/var/lib/rancher/k3s", "/usr/local/bin/k3s", "/etc/rancher/k3s"),
        processes=("k3s", "k3s-server", "k3s-agent"),
    ),
    # rke2 uses the same socket path as k3s (it shares k3s' agent code)
    "rke2": Flavor(
        "rke2", f"{_RANCHER_RKE2}/config.toml", "/run/k3s/containerd/containerd.sock",
        binaries=("/var/lib/rancher/rke2/bin/containerd",),
        templates=(f"{_RANCHER_RKE2}/config-v3.toml.tmpl", f"{_RANCHER_RKE2}/config.toml.tmpl"),
        units=("rke2-server.service", "rke2-agent.service"),
        files=("/var/lib/rancher/rke2", "/usr/local/bin/rke2", "/etc/rancher/rke2"),
        processes=("rke2",),
    ),
    # k0s generates containerd.toml and imports /etc/k0s/containerd.d/*.toml: edits go in a drop-in
    "k0s": Flavor(
        "k0s", "/etc/k0s/containerd.toml", "/run/k0s/containerd.sock",
        binaries=("/var/lib/k0s/bin/containerd",),
        dropin_dir="/etc/k0s/containerd.d",
        units=("k0sworker.service", "k0scontroller.service"),
        files=("/var/lib/k0s", "/usr/local/bin/k0s", "/etc/k0s"),
        processes=("k0s",),
    ),
    # microk8s re-renders args/containerd.toml from args/containerd-template.toml (a sed of ${SNAP}
    # and ${SNAP_DATA}) at every start (snap wrapper run-containerd-with-args): the template is
    # plain TOML and the file that counts.
    "microk8s": Flavor(
        "microk8s", "/var/snap/microk8s/current/args/containerd-template.toml",
        "/var/snap/microk8s/common/run/containerd.sock",
        binaries=("/snap/microk8s/current/bin/containerd",),
        rendered="/var/snap/microk8s/current/args/containerd.toml",
        units=("snap.microk8s.daemon-containerd.service",),
        files=("/var/snap/microk8s", "/snap/microk8s"),
    ),
    "containerd": Flavor("containerd", "/etc/containerd/config.toml", "/run/containerd/containerd.sock",
                         units=("containerd.service",)),
}


def flavor_of(name: str | None) -> Flavor:
    """The named flavor's table; plain containerd's for an unknown or missing name."""
    return FLAVORS.get(name or "containerd", FLAVORS["containerd"])
