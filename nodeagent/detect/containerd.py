"""containerd on the host: binary, version, running process, config file, socket, flavor.

Sources, in order of trust: explicit settings (--containerd-config/--containerd-socket),
the running process's own flags, the config file's `grpc.address`, the flavor's defaults.
Only a trusted process counts (root, from a root-owned binary: see detect.trust); among
those, the one systemd runs as the flavor's unit is preferred. The version comes from
running `<binary> --version` when the root is live, the binary taken from its path and only
when that path is root-controlled; for another root (a DaemonSet's /host) from the host's
package database (/var/lib/dpkg/status). A binary found only through a process
(/proc/<pid>/exe) is never run, and binaries inside a non-live root are never run either:
they may be another architecture's, need the host's libraries, or (captured trees) be stand-ins.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from nodeagent.detect import containerd_config, flavor as flavor_mod, procs, trust, unit_pid
from nodeagent.facts import ContainerdFacts
from nodeagent.errors import CommandFailed, HostError
from nodeagent.host import HostRoot
from nodeagent.run import run

_VERSION = re.compile(r"(?<![\w.])v?(\d+\.\d+\.\d+)")
_DPKG_PACKAGES = ("containerd", "containerd.io")


def parse_version(text: str) -> str | None:
    """'containerd github.com/containerd/containerd 1.6.20~ds1 ...' -> '1.6.20'."""
    match = _VERSION.search(text or "")
    return match.group(1) if match else None


def _dpkg_version(host: HostRoot) -> str | None:
    status = host.read_text("/var/lib/dpkg/status", limit=64 << 20)
    if not status:
        return None
    for paragraph in status.split("\n\n"):
        fields = dict(
            (line.split(":", 1)[0], line.split(":", 1)[1].strip())
            for line in paragraph.splitlines()
            if ":" in line and not line.startswith(" ")
        )
        if fields.get("Package") in _DPKG_PACKAGES and "installed" in fields.get("Status", "").split():
            return parse_version(fields.get("Version", ""))
    return None


# systemd's default PATH for services, which containerd.service runs with
DEFAULT_DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def daemon_path(process: procs.HostProcess | None, binary_dir: str | None) -> list[str]:
    """Directories containerd searches for shims: its own PATH (read from its environment,
    which works from a pod too), else systemd's default; then its binary's directory."""
    path = (process.environ().get("PATH") if process else None) or DEFAULT_DAEMON_PATH
    dirs = [d for d in path.split(":") if d]
    if binary_dir and binary_dir not in dirs:
        dirs.append(binary_dir)
    return dirs


def _pick_process(host: HostRoot, found: list[procs.HostProcess], flavor: flavor_mod.Flavor,
                  config_hint: str | None) -> procs.HostProcess | None:
    """Among trusted processes: the one serving the config the operator named, then the one
    systemd runs as the flavor's unit (its MainPID, else its cgroup), then one started from the
    flavor's own binary, then one with the flavor's config/socket (not, say, Docker's own
    containerd), then any but Docker's."""
    main_pids = unit_pid.main_pids(host, flavor.units) if found else set()
    rules = (
        lambda p: bool(config_hint) and p.flag("--config", "-c") == config_hint,
        lambda p: unit_pid.innermost_pid(p) in main_pids,
        lambda p: trust.unit_of(p, flavor.units) is not None,
        lambda p: trust.executable_path(p) in flavor.binaries,
        lambda p: p.flag("--address", "-a") == flavor.socket or p.flag("--config", "-c") == flavor.config,
        lambda p: "docker" not in " ".join(p.cmdline),
    )
    for rule in rules:
        for proc in found:
            if rule(proc):
                return proc
    return None


def discover_process(host: HostRoot, flavor: flavor_mod.Flavor, config_hint: str | None
                     ) -> tuple[procs.HostProcess | None, list[dict[str, Any]]]:
    """(the containerd process to believe, every untrusted process calling itself containerd)."""
    trusted, untrusted = [], []
    for proc in procs.find(host, ("containerd",)):
        verdict = trust.process_verdict(host, proc)
        if verdict.trusted:
            trusted.append(proc)
        else:
            untrusted.append(trust.describe(host, proc, verdict))
    return _pick_process(host, trusted, flavor, config_hint), untrusted


def _find_binary(host: HostRoot, process: procs.HostProcess | None, flavor: flavor_mod.Flavor,
                 reasons: list[str]) -> str | None:
    """The containerd binary by its host path: the trusted process's, the flavor's, then PATH's;
    a path that is not root-controlled is skipped (with a reason), as nodeagent may run it."""
    candidates = [trust.executable_path(process)] if process else []
    candidates += [c for c in flavor.binaries if host.exists(c)]
    found = host.which("containerd")
    if found:
        candidates.append(found)
    for candidate in dict.fromkeys(c for c in candidates if c):
        verdict = trust.path_verdict(host, candidate)
        if verdict.trusted:
            return candidate
        reasons.append(f"not using {candidate} as containerd's binary: {verdict.reason}")
    return None


def _binary_version(host: HostRoot, binary: str, reasons: list[str]) -> str | None:
    try:
        result = run([str(host.resolve(binary)), "--version"], timeout=10)
    except (CommandFailed, HostError) as exc:
        reasons.append(f"`{binary} --version` failed: {exc.message}")
        return None
    version = parse_version(result.stdout)
    if version is None:
        reasons.append(f"could not read a version from `{binary} --version`: {result.stdout.strip()[:80]!r}")
    return version


def _socket(host: HostRoot, socket_hint: str | None, process: procs.HostProcess | None, flavor: flavor_mod.Flavor,
            config: containerd_config.ConfigFacts, reasons: list[str]) -> tuple[str | None, str | None]:
    """(the CRI socket to use, a discovered socket refused as not root-owned)."""
    if socket_hint:
        return socket_hint, None  # the operator's word
    socket = (process.flag("--address", "-a") if process else None) or containerd_config.grpc_address(config) or flavor.socket
    verdict = trust.socket_verdict(host, socket)
    if verdict.trusted:
        return socket, None
    reasons.append(f"not trusting CRI socket {socket}: {verdict.reason}")
    return None, socket


def probe(host: HostRoot, config_hint: str | None = None, socket_hint: str | None = None) -> ContainerdFacts:
    """containerd's facts; the hints are the operator's --containerd-config/--containerd-socket."""
    reasons: list[str] = []
    flavor_facts = flavor_mod.detect(host)
    flavor = flavor_facts.flavor

    process, untrusted = discover_process(host, flavor, config_hint)
    binary = _find_binary(host, process, flavor, reasons)

    process_config = process.flag("--config", "-c") if process else None
    if process_config and process_config == flavor.rendered:
        process_config = flavor.config  # edits belong in the source it is rendered from
    config_path = config_hint or process_config or flavor.config

    version = None
    if binary and host.is_live:
        version = _binary_version(host, binary, reasons)
    if version is None and not host.is_live and (binary or process):
        version = _dpkg_version(host)
        if version is None:
            reasons.append("containerd version unknown: the root is not live and the package database does not list it")

    found = bool(binary or process)
    config = containerd_config.read(host, config_path, version)
    if found and not config.exists:
        reasons.append(f"{config_path} does not exist (containerd runs with its built-in defaults)")
    if config.error:
        reasons.append(f"containerd config {config.error}")
    if config.chain_error:
        reasons.append(f"containerd config imports: {config.chain_error}")

    if not found:
        reasons.append("no containerd binary on the host PATH or in the distribution's usual place, and none running")

    socket, untrusted_socket = _socket(host, socket_hint, process, flavor, config, reasons)
    template = next((t for t in flavor.templates if host.exists(t)), None)
    binary_dir = posixpath.dirname(binary) if binary else None
    return ContainerdFacts(
        found=found,
        version=version,
        config_path=config_path,
        config_version=config.version if config.error is None else None,
        socket=socket,
        flavor=flavor.name,
        # extras
        binary=binary,
        binary_dir=binary_dir,
        running=process is not None,
        pid=process.pid if process else None,
        daemon_path=daemon_path(process, binary_dir),
        config_exists=config.exists,
        config_error=config.error or config.chain_error,
        config_imports=[f.path for f in config.chain[1:]],
        config_template=template,
        config_template_candidates=list(flavor.templates),
        config_dropin_dir=flavor.dropin_dir,
        config_rendered=flavor.rendered,
        systemd_cgroup=containerd_config.runc_systemd_cgroup(config),
        handlers=sorted(config.handlers),
        **containerd_config.snapshotters(config, version),  # extra: Kata's fc shim needs devmapper
        flavor_evidence=flavor_facts.evidence,
        unit=flavor_facts.unit,
        reasons=reasons,
        untrusted_processes=untrusted,  # never used for discovery; doctor's containerd-trust names them
        untrusted_socket=untrusted_socket,
    )
