"""The contract's architecture names, and the per-runtime catalog asked through the plug-ins.

Each runtime's release layout, upstream URL, version format and pinned digests live in its
module under `nodeagent/runtimes/`; this module keeps what all of them share.
"""

from __future__ import annotations

import platform

from nodeagent import runtimes as runtime_plugins

_MACHINE = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "s390x": "s390x", "ppc64le": "ppc64le"}


def host_arch() -> str:
    """This machine's architecture in the contract's spelling (amd64, arm64, ...)."""
    machine = platform.machine()
    return _MACHINE.get(machine, machine)


def check_version(runtime: str, version: str) -> str:
    """Refuse versions that could not name a release (and could walk out of a URL or dir)."""
    return runtime_plugins.get(runtime).check_version(version)


def upstream_arch(runtime: str, arch: str) -> str:
    """The runtime project's spelling of `arch`; ArtifactError when it ships no build for it."""
    return runtime_plugins.get(runtime).upstream_arch(arch)
