"""Which containerd distribution runs the node: plain containerd, k3s, rke2, k0s or microk8s.

Each flavor keeps its containerd config, socket and binary in its own place; editing the
wrong one (say Docker's containerd on a k3s node) changes nothing. Evidence comes from
their (trusted: see detect.trust) processes, systemd units and files, strongest first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nodeagent.detect import procs, trust
from nodeagent.host import HostRoot

_UNIT_DIRS = ("/etc/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")


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


@dataclass
class FlavorFacts:
    flavor: Flavor
    evidence: list[str] = field(default_factory=list)
    unit: str | None = None  # the systemd unit that runs its containerd (to restart / start it)


def _installed_unit(host: HostRoot, flavor: Flavor) -> str | None:
    for unit in flavor.units:
        if any(host.exists(f"{d}/{unit}") for d in _UNIT_DIRS):
            return unit
    return flavor.units[0] if flavor.units else None


def detect(host: HostRoot) -> FlavorFacts:
    """Score each distribution: a running process 3, a unit 2, a file 1; plain containerd otherwise."""
    best: tuple[int, str] = (0, "containerd")
    evidence: dict[str, list[str]] = {}
    names = tuple(n for f in FLAVORS.values() for n in f.processes)
    # a process any user could start (a `k3s` copy in /tmp) must not pick the config we edit
    running = {p.name for p in procs.find(host, names) if trust.process_verdict(host, p).trusted}
    for flavor in FLAVORS.values():
        found = evidence.setdefault(flavor.name, [])
        score = 0
        for name in flavor.processes:
            if name in running:
                score += 3
                found.append(f"process {name}")
        for unit in flavor.units if flavor.name != "containerd" else ():
            for directory in _UNIT_DIRS:
                if host.exists(f"{directory}/{unit}"):
                    score += 2
                    found.append(f"unit {directory}/{unit}")
                    break
        for path in (*flavor.files, flavor.config):
            if flavor.name != "containerd" and host.exists(path):
                score += 1
                found.append(f"file {path}")
        if score > best[0]:
            best = (score, flavor.name)
    chosen = FLAVORS[best[1]]
    return FlavorFacts(chosen, evidence[best[1]], _installed_unit(host, chosen))
