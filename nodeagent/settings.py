"""All of nodeagent's settings in one typed object.

Precedence: command-line flag > environment (`NODEAGENT_<NAME>`) > config file
(`--config`, else /etc/nodeagent/config.toml if present) > defaults.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from nodeagent.errors import UsageError
from nodeagent.runtimes import NAMES as RUNTIME_NAMES

DEFAULT_CONFIG = "/etc/nodeagent/config.toml"
ENV_PREFIX = "NODEAGENT_"


@dataclass
class Settings:
    # global
    root: str = "/"
    config: str | None = None
    output: str = "text"
    log_format: str = "auto"
    verbosity: int = 0
    kubeconfig: str | None = None
    node_name: str | None = None
    # what to install and how
    runtime: str = "all"
    mirror: str | None = None
    restart: str = "auto"
    containerd_config: str | None = None
    containerd_socket: str | None = None
    gvisor_version: str = "latest"
    kata_version: str = "3.28.0"  # released after June 2025, so GitHub's listing has its digest
    kata_sha256: str | None = None
    skip_eligibility: bool = False
    force: bool = False
    dry_run: bool = False
    gvisor_handler: str = "runsc"
    kata_handler: str = "kata"
    kata_extra_handlers: list[str] = field(default_factory=list)
    gvisor_platform: str | None = None  # None: chosen by detection
    health_timeout: float = 60.0
    download_timeout: float = 30.0
    download_retries: int = 4
    download_backoff: float = 1.0  # first retry pause in seconds; doubles per retry
    max_download_size: int = 2 << 30  # bytes per artifact (Kata 3.28.0 arm64: 597 MB); 0: no cap
    pins: str | None = None  # file of `<hex>  <mirror path>` digests that win over a mirror's own
    # where Kata's sha256 comes from when nothing else names one ("" = never ask); see release_listing.py
    kata_release_listing: str = "https://api.github.com/repos/kata-containers/kata-containers/releases/tags/{version}"
    allow_control_plane_restart: bool = False  # --restart auto may restart containerd under running static pods
    # Kata shims to register besides `kata` (qemu, clh, fc, dragonball, qemu-runtime-rs, ...): a handler,
    # shim link, RuntimeClass and label each. Supersedes kata_extra_handlers (kata-qemu, ...), still read.
    kata_shims: list[str] = field(default_factory=list)
    gvisor_debug_log: str | None = None  # runsc.toml debug-log (with debug = "true"); None: no debug logging
    gvisor_net_raw: bool = False  # runsc.toml net-raw: raw sockets in sandboxes (off, as runsc's default)
    # Kubernetes
    label_prefix: str = "sandbox.nodeagent.io/"
    kata_compat_label: bool = False
    gvisor_runtimeclass: str = "gvisor"
    kata_runtimeclass: str = "kata"
    gvisor_overhead_memory: str = "64Mi"
    gvisor_overhead_cpu: str = "100m"
    kata_overhead_memory: str = "160Mi"
    kata_overhead_cpu: str = "250m"
    max_concurrent_restarts: int = 1
    overhead_from: str | None = None  # `verify --measure` JSON whose recommended podFixed wins over *_overhead_*
    rollout_max_failures: int = 3  # nodes failing one desired state before the rollout halts; 0: never
    startup_taint: str | None = None  # taint key removed from this Node once converged and verified
    kata_shim_overheads: list[str] = field(default_factory=list)  # `<shim>=<memory>[/<cpu>]`, e.g. qemu=200Mi/300m
    # agent
    interval: float = 300.0
    # Loopback by default: on a systemd host the agent shares the node's network, and /readyz and
    # /metrics are unauthenticated. The DaemonSet's ConfigMap sets 0.0.0.0:9101, which inside the
    # pod's own network namespace is the pod IP the kubelet's probes dial.
    listen: str = "127.0.0.1:9101"

    @property
    def json(self) -> bool:
        return self.output == "json"


CHOICES = {
    "output": ("text", "json"),
    "log_format": ("auto", "json", "console"),
    "runtime": (*RUNTIME_NAMES, "all"),
    "restart": ("auto", "systemd", "none"),
    "gvisor_platform": (None, "systrap", "kvm", "ptrace"),
}

_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
FIELD_NAMES = frozenset(_FIELDS)  # what the CLI may pass to load() as flags
_TYPES = get_type_hints(Settings)


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = _TYPES[name]
    text = str(kind)
    try:
        if "bool" in text and isinstance(value, bool):
            return value  # a TOML boolean (else it would fall through to str(): "False" is truthy)
        if "bool" in text and not isinstance(value, bool):
            lowered = str(value).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if "list" in text:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, list):
                return [str(v) for v in value]
            raise ValueError(value)
        if kind is int or text.startswith("int"):
            return int(value)
        if kind is float or text.startswith("float"):
            return float(value)
        return value if value is None else str(value)
    except (TypeError, ValueError):
        raise UsageError(
            f"setting {name!r} from {source} has an invalid value {value!r}",
            f"{name} expects {text.replace('typing.', '')}",
        ) from None


def _from_file(path: str, explicit: bool) -> dict[str, Any]:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        if explicit:
            raise UsageError(f"config file {path} does not exist", "pass an existing file to --config") from None
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}", "check its permissions") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}", "fix the file's syntax") from None
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in _FIELDS or name == "config":
            raise UsageError(f"unknown setting {key!r} in {path}", "see the README for the list of settings")
        values[name] = _coerce(name, value, path)
    return values


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    values = {}
    for name in _FIELDS:
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ:
            values[name] = _coerce(name, environ[env_name], env_name)
    return values


# A taint key as the API server validates it: an optional DNS-subdomain prefix and "/", then a name.
_TAINT_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def _check_fleet(settings: Settings) -> None:
    if settings.rollout_max_failures < 0:
        raise UsageError(f"invalid rollout-max-failures {settings.rollout_max_failures}",
                         "use 0 (never halt) or a positive number of failed nodes")
    taint = settings.startup_taint
    if taint is not None and (len(taint) > 316 or not _TAINT_KEY.match(taint) or len(taint.rsplit("/", 1)[0]) > 253):
        raise UsageError(f"invalid startup-taint {taint!r}: not a taint key",
                         "use the key only, e.g. sandbox.nodeagent.io/not-ready (no =value or :effect)")


def load(flags: dict[str, Any], environ: dict[str, str] | None = None) -> Settings:
    """Merge flags (only those explicitly given), env and file into Settings."""
    environ = dict(os.environ if environ is None else environ)
    env_values = _from_env(environ)
    config_path = flags.get("config") or env_values.get("config")
    explicit = config_path is not None
    file_values = _from_file(config_path or DEFAULT_CONFIG, explicit)
    merged: dict[str, Any] = {}
    merged.update(file_values)
    merged.update(env_values)
    merged.update({k: _coerce(k, v, "the command line") for k, v in flags.items() if v is not None and k in _FIELDS})
    if "node_name" not in merged and environ.get("NODE_NAME"):
        merged["node_name"] = environ["NODE_NAME"]
    if "kubeconfig" not in merged and environ.get("KUBECONFIG"):
        merged["kubeconfig"] = environ["KUBECONFIG"]
    settings = Settings(**merged)
    _check_fleet(settings)
    for name, allowed in CHOICES.items():
        if getattr(settings, name) not in allowed:
            raise UsageError(
                f"invalid {name.replace('_', '-')} {getattr(settings, name)!r}",
                "choose one of: " + ", ".join(a for a in allowed if a),
            )
    return settings
