"""Host layouts for the config engine's table-driven tests: real-world configs in fake roots.

Each scenario names a containerd version and flavor (the facts detection would report)
and the files of a host root, taken from tests/fixtures/corpus and tests/fixtures/containerd.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nodeagent.facts import HostFacts
from nodeagent.host import HostRoot
from tests.support.containerd_daemon import BINDIRS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CORPUS = FIXTURES / "corpus"
OURS = FIXTURES / "containerd"
K3S_DIR = "/var/lib/rancher/k3s/agent/etc/containerd"
RKE2_DIR = "/var/lib/rancher/rke2/agent/etc/containerd"
MICROK8S_ARGS = "/var/snap/microk8s/current/args"
VERSIONS = {"1.6": "1.6.20", "1.7": "1.7.24", "2.1": "2.1.9"}


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@dataclass
class Scenario:
    name: str
    containerd: str  # "1.6" | "1.7" | "2.1"
    files: dict[str, bytes]
    flavor: str = "containerd"
    config_path: str = "/etc/containerd/config.toml"
    # where the handlers must end up, for the checks (defaults to config_path)
    effective_path: str | None = None
    expect_restart: bool = True
    systemd_cgroup: bool | None = None
    extra: dict = field(default_factory=dict)

    @property
    def version(self) -> str:
        return VERSIONS[self.containerd]

    def facts(self, platform: str = "systrap") -> HostFacts:
        return HostFacts.from_json({
            "containerd": {"found": True, "version": self.version, "config_path": self.config_path,
                           "flavor": self.flavor, "systemd_cgroup": self.systemd_cgroup},
            "runtimes": {"gvisor": {"eligible": True, "platform": platform, "reasons": []},
                         "kata": {"eligible": True, "reasons": []}},
        })

    def build(self, root: Path) -> HostRoot:
        for host_path, data in self.files.items():
            target = root / host_path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return HostRoot(root)


def _main(name: str, containerd: str, source: Path, **kw) -> Scenario:
    return Scenario(name, containerd, {"/etc/containerd/config.toml": source.read_bytes()}, **kw)


def all_scenarios() -> list[Scenario]:
    c = CORPUS
    o = OURS
    out = [
        _main("eks-al2-v2@1.7", "1.7", c / "eks-al2-v2.toml"),
        _main("eks-al2-v2@2.1", "2.1", c / "eks-al2-v2.toml",  # respects its imports glob
              effective_path="/etc/containerd/config.d/90-nodeagent.toml"),
        _main("eks-nvidia-v2@1.7", "1.7", c / "eks-nodeadm-nvidia-v2.toml"),
        _main("eks-nvidia-v2@2.1", "2.1", c / "eks-nodeadm-nvidia-v2.toml"),
        _main("eks-nvidia-v3@2.1", "2.1", c / "eks-nodeadm-nvidia-v3.toml"),
        _main("kind-v2@1.6", "1.6", c / "kind-node-v2.toml"),
        _main("kind-v2@2.1", "2.1", c / "kind-node-v2.toml"),
        _main("minikube-v1@1.6", "1.6", c / "minikube-iso-v1.toml"),
        _main("minikube-v1@2.1", "2.1", c / "minikube-iso-v1.toml"),
        _main("default-1.6", "1.6", o / "default-1.6.toml"),
        _main("default-1.7", "1.7", o / "default-1.7.toml"),
        _main("default-2.1", "2.1", o / "default-2.1.toml"),
        Scenario("kind-v2-crlf@1.7", "1.7", {"/etc/containerd/config.toml": crlf((c / "kind-node-v2.toml").read_bytes())}),
        Scenario("eks-v3-crlf@2.1", "2.1",
                 {"/etc/containerd/config.toml": crlf((c / "eks-nodeadm-nvidia-v3.toml").read_bytes())}),
        Scenario("cri-in-dropin@1.7", "1.7", {
            "/etc/containerd/config.toml": (o / "cri-in-dropin-main-v2.toml").read_bytes(),
            "/etc/containerd/conf.d/10-cri.toml": (o / "cri-in-dropin-10-cri.toml").read_bytes(),
        }, effective_path="/etc/containerd/conf.d/10-cri.toml"),
        Scenario("k3s-v2", "1.7", {f"{K3S_DIR}/config.toml": (o / "k3s-rendered-v2.toml").read_bytes()},
                 flavor="k3s", config_path=f"{K3S_DIR}/config.toml", effective_path=f"{K3S_DIR}/config.toml.tmpl"),
        Scenario("k3s-v3", "2.1", {f"{K3S_DIR}/config.toml": (o / "k3s-rendered-v3.toml").read_bytes()},
                 flavor="k3s", config_path=f"{K3S_DIR}/config.toml", effective_path=f"{K3S_DIR}/config-v3.toml.tmpl"),
        Scenario("k3s-v2-operator-template", "1.7", {
            f"{K3S_DIR}/config.toml": (o / "k3s-rendered-v2.toml").read_bytes(),
            f"{K3S_DIR}/config.toml.tmpl": (o / "k3s-template-with-base.tmpl").read_bytes(),
        }, flavor="k3s", config_path=f"{K3S_DIR}/config.toml", effective_path=f"{K3S_DIR}/config.toml.tmpl"),
        Scenario("rke2-v2", "1.7", {f"{RKE2_DIR}/config.toml": (o / "k3s-rendered-v2.toml").read_bytes()},
                 flavor="rke2", config_path=f"{RKE2_DIR}/config.toml", effective_path=f"{RKE2_DIR}/config.toml.tmpl"),
        Scenario("k0s", "1.7", {
            "/etc/k0s/containerd.toml": (o / "k0s-containerd.toml").read_bytes(),
            "/run/k0s/containerd-cri.toml": (o / "cri-in-dropin-10-cri.toml").read_bytes(),
        }, flavor="k0s", config_path="/etc/k0s/containerd.toml",
            effective_path="/etc/k0s/containerd.d/nodeagent.toml", expect_restart=False),
        # detection reports the rendered args/containerd.toml; the template is what must change
        Scenario("microk8s", "1.7", {
            f"{MICROK8S_ARGS}/containerd-template.toml": (o / "microk8s-containerd-template.toml").read_bytes(),
            f"{MICROK8S_ARGS}/containerd.toml": (o / "microk8s-containerd-template.toml").read_bytes()
            .replace(b"${SNAP_DATA}", b"/var/snap/microk8s/123").replace(b"${SNAPSHOTTER}", b"overlayfs")
            .replace(b"${RUNTIME_TYPE}", b"io.containerd.runc.v2").replace(b"${RUNTIME}", b"runc"),
        }, flavor="microk8s", config_path=f"{MICROK8S_ARGS}/containerd.toml",
            effective_path=f"{MICROK8S_ARGS}/containerd-template.toml"),
    ]
    return out


SCENARIOS = {s.name: s for s in all_scenarios()}


BINARIES = {series: bindir / "containerd" for series, bindir in BINDIRS.items()}
DPKG_VERSIONS = {"1.6": "1.6.20~ds1-1+b1", "1.7": "1.7.24~ds1-6+deb13u1", "2.1": "2.1.9+ds1-5"}


def install_containerd(root: Path, series: str, host_path: str = "/usr/bin/containerd") -> None:
    """Put the REAL containerd of `series` into a fake root (hard link; copy across filesystems)
    and list it in the root's dpkg database, which is how detection reads a non-live root's version."""
    import os
    import shutil

    target = root / host_path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(BINARIES[series], target)
    except OSError:
        shutil.copy2(BINARIES[series], target)
    status = root / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True, exist_ok=True)
    status.write_text(
        f"Package: containerd\nStatus: install ok installed\nArchitecture: amd64\nVersion: {DPKG_VERSIONS[series]}\n\n"
    )


def have_containerd(series: str) -> bool:
    return BINARIES[series].is_file()


def converge_command(verb: str, root: Path, **settings):
    """Run the real pipeline (nodeagent.converge) in-process on a fake root, with real detection.

    Artifacts come from the suite's default mirror (a local directory); `--restart none` and no
    containerd running in the fake root, so the config change is written and no restart is tried.
    Returns converge's Report; refusals raise the NodeagentError the CLI would print.
    """
    from nodeagent import converge
    from nodeagent.settings import Settings
    from tests.support.mirror import default_mirror

    settings.setdefault("mirror", str(default_mirror()))
    settings.setdefault("restart", "none")
    return getattr(converge, verb)(Settings(root=str(root), **settings))
