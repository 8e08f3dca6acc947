"""Which containerd distribution runs the node: plain containerd, k3s, rke2, k0s or microk8s.

Each flavor keeps its containerd config, socket and binary in its own place (the table is the
containerd layer's: containerd/flavors.py); editing the wrong one (say Docker's containerd on a
k3s node) changes nothing. Evidence comes from
their (trusted: see detect.trust) processes, systemd units and files, strongest first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nodeagent.containerd.flavors import FLAVORS, Flavor
from nodeagent.detect import procs, trust
from nodeagent.host import HostRoot

_UNIT_DIRS = ("/etc/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")


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
