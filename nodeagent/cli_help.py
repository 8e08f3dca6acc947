"""One-line help for every option and setting, in one table.

Keyed by the setting's (or argparse dest's) name, so a flag, its `NODEAGENT_<NAME>` variable and
its config-file key share one text; `fill_help` gives it to every option that has none of its own.
tests/unit/test_cli_help.py fails for an option or a setting missing here.
"""

from __future__ import annotations

import argparse

HELP: dict[str, str] = {
    # global
    "help": "show this help and exit",
    "root": "the host's root filesystem (default /)",
    "config": "nodeagent's own settings file (TOML; default /etc/nodeagent/config.toml if present)",
    "output": "result format: text or json",
    "log_format": "log format on stderr: auto (console on a terminal, else json), json or console",
    "verbose": "more log detail (repeatable); also shows tracebacks of errors",
    "quiet": "less log detail (repeatable)",
    "verbosity": "log detail as a number: positive is more (like -v), negative less (like -q)",
    "kubeconfig": "kubeconfig for the Kubernetes API (default: $KUBECONFIG, else in-cluster)",
    "node_name": "this node's name in Kubernetes (default: $NODE_NAME)",
    # what to install and how
    "runtime": "which runtime: gvisor, kata or all (default all)",
    "mirror": "fetch artifacts from this mirror: http(s)://, file:// or a directory",
    "restart": "how to restart containerd after a change: auto, systemd or none",
    "containerd_config": "containerd's config file (default: detected)",
    "containerd_socket": "containerd's socket for CRI checks (default: detected)",
    "gvisor_version": "gVisor release to install, e.g. 20240729 (default latest)",
    "kata_version": "Kata Containers release to install",
    "kata_sha256": "expected sha256 of the Kata tarball (checked before anything is unpacked)",
    "skip_eligibility": "install even where detection says the runtime cannot run here",
    "force": "replace files nodeagent did not install, or remove a runtime pods still use",
    "dry_run": "show what would change and change nothing",
    "gvisor_handler": "containerd handler name for gVisor (default runsc)",
    "kata_handler": "containerd handler name for Kata (default kata)",
    "kata_extra_handlers": "superseded by kata_shims (still read): Kata handlers kata-<shim>, comma-separated",
    "gvisor_platform": "gVisor platform: systrap, kvm or ptrace (default: chosen by detection)",
    "health_timeout": "seconds to wait for containerd to serve CRI after a restart before rolling back",
    "download_timeout": "seconds to wait for a connection or for more data before a download attempt fails",
    "download_retries": "retries of a failed download",
    "download_backoff": "pause before the first download retry in seconds; doubles per retry",
    "max_download_size": "largest artifact a download may be, in bytes (default 2 GiB; 0: no cap)",
    "pins": "file of `<hex>  <mirror path>` digests that win over a mirror's checksum files",
    "kata_release_listing": "https URL of Kata's release listing ({version} = tag) whose asset digests vouch for the tarball; empty: off",
    "allow_control_plane_restart": "let --restart auto restart containerd while a control plane's static pods run",
    "kata_shims": "Kata shims to register as kata-<shim> handlers, comma-separated (e.g. qemu,clh,fc,dragonball,qemu-runtime-rs)",
    "gvisor_debug_log": "turn on runsc debug logs, written here (absolute; end with / for one file per command)",
    "gvisor_net_raw": "let gVisor sandboxes open raw sockets (runsc.toml net-raw; default off)",
    # Kubernetes
    "label_prefix": "prefix of the node labels nodeagent sets",
    "kata_compat_label": "also set kata-deploy's katacontainers.io/kata-runtime label",
    "gvisor_runtimeclass": "name of gVisor's RuntimeClass",
    "kata_runtimeclass": "name of Kata's RuntimeClass",
    "gvisor_overhead_memory": "pod memory overhead in gVisor's RuntimeClass",
    "gvisor_overhead_cpu": "pod CPU overhead in gVisor's RuntimeClass",
    "kata_overhead_memory": "pod memory overhead in Kata's RuntimeClass",
    "kata_overhead_cpu": "pod CPU overhead in Kata's RuntimeClass",
    "max_concurrent_restarts": "how many nodes of the cluster may restart containerd at once",
    "overhead_from": "RuntimeClass overhead from this `verify --measure -o json` file (wins over *_overhead_*)",
    "rollout_max_failures": "failed nodes after which no agent restarts containerd for the same settings (0: never halt)",
    "startup_taint": "taint key to remove from this Node once it converged and verify passed",
    "kata_shim_overheads": "pod overhead per Kata shim RuntimeClass, comma-separated <shim>=<memory>[/<cpu>] (default: kata-deploy's)",
    # commands' own options
    "image": "image for CRI-based checks (default: skip CRI pods)",
    "apply": "write to the Kubernetes API instead of printing",
    "arch": "architecture to bundle: amd64, arm64, ... (repeatable; default this host's)",
    "dir": "directory to fill with the offline mirror",
    "once": "converge once and exit",
    "measure": "start N sandboxes per runtime (default 3) and measure the memory and CPU the runtime adds",
    "out": "also write the JSON report to this file (for runtimeclasses --overhead-from)",
    "action": "status: the failed nodes per desired state; resume: clear them so restarts go on",
    "namespace": "the agents' namespace (default: $POD_NAMESPACE, else nodeagent)",
    # agent
    "interval": "seconds between drift checks",
    "listen": "address:port of the health and metrics endpoint",
}

EPILOG = """\
examples:
  nodeagent doctor                       check this node: KVM, vsock, containerd, eligibility
  nodeagent install --runtime gvisor     install gVisor and register its containerd handler

`nodeagent COMMAND --help` lists a command's options."""


class TopLevelFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples as written and each command on one line (argparse wraps at 80 otherwise)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=22, width=110)


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and every sub-command's parser below it."""
    found = [parser]
    for action in parser._actions:  # argparse offers no public walk of its actions
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def fill_help(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give every option of `parser` and its sub-commands the table's text, unless it has its own."""
    for p in _parsers(parser):
        for action in p._actions:
            if action.help is None and action.dest in HELP:
                action.help = HELP[action.dest]
    return parser

