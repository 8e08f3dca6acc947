"""What a containerd restart touches on this node, and whether `--restart auto` may do it.

Running sandboxes survive a containerd restart (their shims keep them), but while containerd is
down the kubelet can neither start, stop nor probe a pod, and a restart that does not come back
leaves every pod on the node unmanaged. On a control-plane node that includes the static pods of
the control plane itself (kube-apiserver, etcd, ...): a failed restart there takes the cluster's API
down with it. On k3s and rke2 containerd runs under the same service as the kubelet, so
restarting it restarts the kubelet too.

The report is read-only: one CRI ListPodSandbox, the kubelet's static pod manifests under --root.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

import yaml

from nodeagent.errors import NodeagentError
from nodeagent.host import HostRoot

# The kubelet records where a pod came from in this annotation and copies the pod's annotations
# (and labels) onto its CRI sandbox: "file" is a static pod from staticPodPath, "http" one from
# the kubelet's manifest URL; pods from the API server say "api".
CONFIG_SOURCE = "kubernetes.io/config.source"
STATIC_SOURCES = frozenset({"file", "http"})
POD_NAME_LABEL = "io.kubernetes.pod.name"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
CONTROL_PLANE_COMPONENTS = frozenset({"kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler"})

KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
DEFAULT_STATIC_POD_PATH = "/etc/kubernetes/manifests"
# flavors whose kubelet reads static pods from their own directory (rke2 runs etcd and
# kube-apiserver from there on a server node)
FLAVOR_STATIC_POD_PATHS = {
    "k3s": "/var/lib/rancher/k3s/agent/pod-manifests",
    "rke2": "/var/lib/rancher/rke2/agent/pod-manifests",
}
# flavors whose containerd is a child of the service that also runs the kubelet: their unit is
# what a restart restarts (service.UNITS), so the kubelet goes down and up with containerd
KUBELET_RESTARTS_WITH_CONTAINERD = {
    "k3s": "k3s runs containerd and the kubelet in one service (k3s / k3s-agent): both restart",
    "rke2": "rke2 runs containerd and the kubelet under one service (rke2-server / rke2-agent): both restart",
}
# units whose process is itself the control plane: restarting containerd restarts the API server
CONTROL_PLANE_IN_UNIT = {
    "k3s.service": "a k3s server runs the API server, scheduler and controllers in that same process: they restart too",
}
MAX_MANIFESTS = 200  # a static pod dir holds a handful; never read an unbounded directory


class RestartRefused(NodeagentError):
    """--restart auto would restart containerd under a running control plane."""

    default_hint = ("drain the control plane's static pods first, restart containerd yourself (--restart none), "
                    "or pass --allow-control-plane-restart (key allow_control_plane_restart) to accept the risk")


@dataclass
class RestartImpact:
    """What restarting containerd now would touch; `as_dict` is the `restart_impact` JSON key."""

    restart: bool
    flavor: str
    sandboxes: dict[str, int] = field(default_factory=dict)  # READY sandboxes per runtime handler
    sandboxes_reason: str | None = None  # why the sandboxes are unknown (containerd not answering)
    static_pod_path: str = DEFAULT_STATIC_POD_PATH
    manifests: list[dict[str, Any]] = field(default_factory=list)
    static_pods: list[dict[str, Any]] = field(default_factory=list)  # running (READY) static pods
    kubelet_restarts: bool = False
    kubelet_note: str | None = None
    control_plane_in_unit: str | None = None  # why the restarted unit is the control plane itself

    @property
    def control_plane(self) -> bool:
        return (any(m["control_plane"] for m in self.manifests) or any(p["control_plane"] for p in self.static_pods)
                or self.control_plane_in_unit is not None)

    @property
    def blocks_auto_restart(self) -> bool:
        """A restart of a control-plane node's containerd while its static pods (or, on a k3s
        server, the control plane inside the restarted unit) run."""
        return self.restart and self.control_plane and (bool(self.static_pods) or self.control_plane_in_unit is not None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "restart": self.restart,
            "flavor": self.flavor,
            "sandboxes": dict(sorted(self.sandboxes.items())),
            "sandboxes_total": sum(self.sandboxes.values()),
            "sandboxes_reason": self.sandboxes_reason,
            "static_pod_path": self.static_pod_path,
            "manifests": self.manifests,
            "static_pods": self.static_pods,
            "control_plane": self.control_plane,
            "kubelet_restarts": self.kubelet_restarts,
            "kubelet_note": self.kubelet_note,
            "control_plane_in_unit": self.control_plane_in_unit,
            "blocks_auto_restart": self.blocks_auto_restart,
        }


def _component(name: str, labels: dict[str, Any]) -> str:
    """The control-plane component a pod is (kubeadm's `component` label, else its name), or ''."""
    component = str(labels.get("component") or "")
    if component in CONTROL_PLANE_COMPONENTS:
        return component
    return next((c for c in CONTROL_PLANE_COMPONENTS if name == c or name.startswith(c + "-")), "")


def static_pod_path(host: HostRoot, flavor: str) -> str:
    """The kubelet's staticPodPath: its config file's, else the flavor's own, else kubeadm's default."""
    text = host.read_text(KUBELET_CONFIG)
    if text:
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError:
            config = None
        path = config.get("staticPodPath") if isinstance(config, dict) else None
        if isinstance(path, str) and path.startswith("/"):
            return path
    return FLAVOR_STATIC_POD_PATHS.get(flavor, DEFAULT_STATIC_POD_PATH)


def read_manifests(host: HostRoot, directory: str) -> list[dict[str, Any]]:
    """One entry per manifest the kubelet would read (it skips names starting with a dot).

    A file that does not parse is listed with its error: the kubelet would skip it too."""
    found = []
    for name in host.listdir(directory)[:MAX_MANIFESTS]:
        if name.startswith("."):
            continue
        path = posixpath.join(directory, name)
        text = host.read_text(path, limit=1 << 20)
        if text is None:
            continue  # a directory or unreadable: not a manifest the kubelet reads
        entry: dict[str, Any] = {"file": path, "name": None, "namespace": None, "control_plane": False}
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            entry["error"] = f"not YAML: {str(exc).splitlines()[0]}"
            found.append(entry)
            continue
        meta = doc.get("metadata") if isinstance(doc, dict) else None
        if not isinstance(meta, dict) or doc.get("kind") != "Pod":
            entry["error"] = "not a Pod manifest"
            found.append(entry)
            continue
        labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
        entry.update(name=str(meta.get("name") or ""), namespace=str(meta.get("namespace") or "default"))
        entry["control_plane"] = bool(_component(entry["name"], labels)) or labels.get("tier") == "control-plane"
        found.append(entry)
    return found


def _running_sandboxes(socket: str) -> tuple[list[Any], str | None]:
    """READY CRI sandboxes, or ([], why) when containerd cannot be asked."""
    from nodeagent.containerd.cri import CriClient, CriError

    try:
        with CriClient(socket, timeout=5) as client:
            ready = client.pb.PodSandboxState.Value("SANDBOX_READY")
            return [p for p in client.list_pods() if p.state == ready], None
    except CriError as exc:
        return [], exc.message


def _static_pod(pod: Any) -> dict[str, Any] | None:
    annotations, labels = dict(pod.annotations), dict(pod.labels)
    if annotations.get(CONFIG_SOURCE) not in STATIC_SOURCES:
        return None
    name = labels.get(POD_NAME_LABEL) or pod.metadata.name
    return {
        "name": name,
        "namespace": labels.get(POD_NAMESPACE_LABEL) or pod.metadata.namespace,
        "handler": pod.runtime_handler,
        "sandbox_id": pod.id,
        "control_plane": bool(_component(pod.metadata.name, labels)) or labels.get("tier") == "control-plane",
    }


def assess(host: HostRoot, socket: str, flavor: str, restart: bool, default_handler: str = "", *,
           ask_cri: bool = True, unit: str | None = None) -> RestartImpact:
    """What a containerd restart would touch now (`unit`: the flavor's detected systemd unit).
    Never raises for an unreachable containerd; `ask_cri=False` when a probe just found nothing
    answering (spares the grpc imports)."""
    impact = RestartImpact(restart=restart, flavor=flavor, static_pod_path=static_pod_path(host, flavor))
    impact.control_plane_in_unit = CONTROL_PLANE_IN_UNIT.get(unit or "")
    impact.manifests = read_manifests(host, impact.static_pod_path)
    pods, impact.sandboxes_reason = _running_sandboxes(socket) if ask_cri else ([], "containerd is not running")
    for pod in pods:
        handler = pod.runtime_handler or default_handler or "(default)"
        impact.sandboxes[handler] = impact.sandboxes.get(handler, 0) + 1
        static = _static_pod(pod)
        if static:
            impact.static_pods.append(static)
    impact.kubelet_note = KUBELET_RESTARTS_WITH_CONTAINERD.get(flavor)
    impact.kubelet_restarts = impact.kubelet_note is not None
    return impact


def enforce(impact: RestartImpact, restart_mode: str, allowed: bool) -> None:
    """Refuse `--restart auto` on a control-plane node whose static pods run (before any write)."""
    if restart_mode != "auto" or allowed or not impact.blocks_auto_restart:
        return
    running = ", ".join(f"{p['namespace']}/{p['name']}" for p in impact.static_pods[:5]) or impact.control_plane_in_unit
    raise RestartRefused(
        f"refusing to restart containerd on a control-plane node while its control plane runs ({running}); "
        "nothing was changed"
    )


def render(impact: RestartImpact) -> list[str]:
    """The human lines of the report (plan, install --dry-run, install)."""
    if not impact.restart:
        return []
    if impact.sandboxes_reason:
        running = f"running sandboxes unknown ({impact.sandboxes_reason})"
    else:
        per = ", ".join(f"{h} {n}" for h, n in sorted(impact.sandboxes.items())) or "none"
        running = f"{sum(impact.sandboxes.values())} running sandbox(es) keep running ({per})"
    lines = [f"restart impact: {running}; the kubelet cannot reach CRI until containerd is back"]
    if impact.static_pods:
        pods = ", ".join(f"{p['namespace']}/{p['name']}" for p in impact.static_pods)
        role = "control-plane node" if impact.control_plane else "node"
        lines.append(f"restart impact: static pods on this {role}: {pods} (from {impact.static_pod_path})")
    elif impact.control_plane:
        lines.append(f"restart impact: control-plane manifests in {impact.static_pod_path}, none running")
    lines.append("restart impact: " + (impact.kubelet_note or "the kubelet keeps running (a separate service)"))
    if impact.control_plane_in_unit:
        lines.append(f"restart impact: {impact.control_plane_in_unit}")
    if impact.blocks_auto_restart:
        lines.append("restart impact: --restart auto refuses this unless --allow-control-plane-restart is given")
    return lines
