"""What a sandbox runtime plug-in knows: the one interface every runtime module implements.

A runtime module (`runtimes/gvisor.py`, `runtimes/kata.py`) exports one `Runtime` object. The
generic layers ask it, never branch on its name: `planning` for its handler tables, `detect` for
its eligibility, `artifacts` for where its release lives and how it is checked and staged, `kube`
for its RuntimeClasses, `verify` for the proof that it isolates. Its methods take the runtime's own
options object (`options(settings)`, built once), not `Settings`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # only for annotations: the plug-ins import these layers, not the reverse
    from nodeagent.artifacts.cache import Cache
    from nodeagent.artifacts.download import Fetcher
    from nodeagent.artifacts.extract import Limits
    from nodeagent.artifacts.pins import Pins
    from nodeagent.artifacts.release import Release
    from nodeagent.containerd.model import HandlerSpec
    from nodeagent.artifacts.digest import Digest
    from nodeagent.facts import HostFacts, RuntimeVerdict
    from nodeagent.host import HostRoot
    from nodeagent.verify import RuntimeCheck


@dataclass(frozen=True)
class RuntimeClassSpec:
    """One RuntimeClass a runtime wants: its name, the containerd handler, scheduling and overhead."""

    name: str
    handler: str
    label: str  # the node label suffix after the prefix (`gvisor` -> sandbox.nodeagent.io/gvisor)
    memory: str | None = None
    cpu: str | None = None
    tolerations: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class ConfigContext:
    """What a runtime's own option files (e.g. runsc.toml) depend on, from the planner."""

    facts: "HostFacts"
    systemd_cgroup: bool  # the node's cgroup driver, as runc uses it


@dataclass
class VerifyContext:
    """What `verify` gives a runtime's check: the host, an image, how to reach CRI, the timeout."""

    host: "HostRoot"
    image: str | None
    socket: Callable[[], str]  # containerd's CRI socket, found on first use
    timeout: float = 60.0
    explicit: bool = False  # the operator named this runtime: a missing install fails, not skips


@dataclass(frozen=True)
class ConfigFile:
    """An option file a runtime writes beside containerd's config, under an undo role."""

    path: str
    role: str
    new: bytes


class Runtime(abc.ABC):
    """One sandbox runtime. Subclasses set the class attributes and implement the methods."""

    name: str  # the contract's runtime name (`--runtime`, the node label, /opt/nodeagent/<name>)
    title: str  # how people write it ("gVisor")
    digest_flag: str | None = None  # a CLI flag that hands in a sha256 for the archive, if any
    config_roles: tuple[str, ...] = ()  # undo roles of option files this runtime owns (state.json)

    def __repr__(self) -> str:
        return f"<runtime {self.name}>"

    # -- settings --------------------------------------------------------------------------
    @abc.abstractmethod
    def options(self, settings: Any) -> Any:
        """The few settings this runtime reads, as its own frozen options object."""

    def default_options(self) -> Any:
        """Options with every default (for callers without settings, e.g. a planner test)."""
        from nodeagent.settings import Settings

        return self.options(Settings())

    @abc.abstractmethod
    def version(self, opts: Any) -> str:
        """The release version the options ask for."""

    def operator_digest(self, opts: Any) -> str | None:
        """A digest the operator handed in with `digest_flag` (hex), or None."""
        return None

    # -- containerd --------------------------------------------------------------------------
    @abc.abstractmethod
    def handler_specs(self, opts: Any) -> list["HandlerSpec"]:
        """Every containerd handler this runtime registers (UsageError for a bad name)."""

    def handlers_named(self, name: str) -> list["HandlerSpec"]:
        """Every table this runtime could have written under handler `name` (to recognise its own
        block in a config); none when the name cannot be one of its handlers."""
        return []

    def config_files(self, current: Callable[[str], bytes | None], ctx: ConfigContext, opts: Any) -> list[ConfigFile]:
        """Option files next to containerd's config this runtime needs (new bytes; unchanged ones too)."""
        return []

    # -- detection ---------------------------------------------------------------------------
    @abc.abstractmethod
    def eligibility(self, facts: "HostFacts") -> "RuntimeVerdict":
        """The contract's verdict for this host (eligible, reasons, ...); a pure function."""

    def variant_verdicts(self, facts: "HostFacts", opts: Any) -> dict[str, "RuntimeVerdict"]:
        """Eligibility of each further handler the options choose (e.g. a Kata shim), by handler
        name; none for a runtime with one handler."""
        return {}

    # -- catalog and release -----------------------------------------------------------------
    @abc.abstractmethod
    def check_version(self, version: str) -> str:
        """Refuse a version that could not name a release (ArtifactError with a hint)."""

    @abc.abstractmethod
    def upstream_arch(self, arch: str) -> str:
        """The project's spelling of a contract arch; ArtifactError if it ships no build for it."""

    @abc.abstractmethod
    def mirror_relpath(self, version: str, arch: str, name: str) -> str:
        """A file's path in the mirror layout (INTERFACE.md "Mirror layout"), as pins name it."""

    @abc.abstractmethod
    def pinned_layouts(self, version: str, arch: str) -> list[list[str]]:
        """Each way a release can be laid out, as the mirror paths that must all be pinned."""

    def builtin_digest(self, version: str, arch: str) -> bool:
        """Whether the catalog pins a digest for this release (trusted without a mirror's word)."""
        return False

    @abc.abstractmethod
    def resolve(self, fetcher: "Fetcher", version: str, arch: str, mirror: str | None,
                flag: "Digest | None", pins: "Pins", listing: str = "") -> "Release":
        """The release's files, each with a digest from a source that may vouch for it.

        `listing` is the URL template of the upstream's release listing, asked for a digest no
        other source gives, by runtimes whose upstream publishes one ("" = never ask)."""

    # -- staging and links -------------------------------------------------------------------
    @abc.abstractmethod
    def is_archive(self, release: "Release") -> bool:
        """Whether the release is one archive to unpack (kept unpacked in the cache) or loose files."""

    @abc.abstractmethod
    def unpack(self, release: "Release", cache: "Cache", staging: Path, limits: "Limits") -> Path:
        """Assemble the release's install tree under `staging`; returns the tree's directory."""

    @abc.abstractmethod
    def check_archive(self, release: "Release", path: Path, limits: "Limits") -> None:
        """Refuse an archive an install would refuse, without unpacking it (`nodeagent bundle`)."""

    def release_name(self, release: "Release", tree: Path) -> str:
        """The version directory's name for a staged tree (a moving version may be resolved)."""
        return release.version

    @abc.abstractmethod
    def links(self, base: str, opts: Any = None) -> dict[str, str]:
        """host link path -> host-absolute target, for the release installed at `base` and what the
        options ask for (None: the links every install has). The first link names the current version."""

    def all_links(self, base: str) -> dict[str, str]:
        """Every link any options could ask for: what uninstall and a changed option look for."""
        return self.links(base)

    def check_release(self, tree: Path, opts: Any, where: str) -> None:
        """Refuse an installed release tree that lacks what the options need (ArtifactError)."""

    def owns_link(self, link: str, target: str) -> bool:
        """A link of ours that points outside /opt/nodeagent/<name> (e.g. through another link)."""
        return False

    # -- Kubernetes ----------------------------------------------------------------------------
    @abc.abstractmethod
    def runtime_classes(self, opts: Any) -> list[RuntimeClassSpec]:
        """The RuntimeClasses that send pods to this runtime's handlers."""

    # -- verify ------------------------------------------------------------------------------
    @abc.abstractmethod
    def verify(self, ctx: VerifyContext, opts: Any) -> "RuntimeCheck":
        """Start a sandbox and compare its kernel with the host's (skipped when not installed)."""
