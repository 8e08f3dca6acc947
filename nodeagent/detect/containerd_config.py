"""Read-only view of a containerd config file and its `imports`, parsed with tomllib.

Only what detection needs: does it parse, its schema version, where runtimes live,
runc's cgroup driver. Editing is another module's job (tomlkit, containerd/plan.py).
A file that does not parse is a fact with a reason, never an exception.
"""

from __future__ import annotations

import fnmatch
import posixpath
import tomllib
from dataclasses import dataclass, field
from typing import Any

from nodeagent.containerd import model
from nodeagent.errors import ConfigError
from nodeagent.host import HostRoot


@dataclass
class ConfigFile:
    path: str  # host path
    exists: bool
    data: dict[str, Any] | None = None
    error: str | None = None  # why it could not be read/parsed
    version: int | None = None  # schema version (missing key = 1); None when unknown

    @property
    def ok(self) -> bool:
        return self.exists and self.error is None


@dataclass
class ContainerdConfig:
    main: ConfigFile
    imports: list[ConfigFile] = field(default_factory=list)

    @property
    def files(self) -> list[ConfigFile]:
        return [self.main, *self.imports]

    @property
    def errors(self) -> list[str]:
        return [f"{f.path}: {f.error}" for f in self.files if f.error]


def read_file(host: HostRoot, path: str) -> ConfigFile:
    raw = host.read_bytes(path)
    if raw is None:
        exists = host.exists(path)
        return ConfigFile(path, exists, error="unreadable" if exists else None)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return ConfigFile(path, True, error="not UTF-8 text")
    except tomllib.TOMLDecodeError as exc:
        return ConfigFile(path, True, error=f"not valid TOML ({exc})")
    try:
        version = model.config_version(data.get("version"))
    except ConfigError as exc:
        return ConfigFile(path, True, data=data, error=exc.message)
    return ConfigFile(path, True, data=data, version=version)


def _expand_import(host: HostRoot, base_dir: str, pattern: str) -> list[str]:
    """containerd resolves relative imports against the main file's directory and expands globs."""
    full = pattern if pattern.startswith("/") else posixpath.join(base_dir, pattern)
    if not any(ch in full for ch in "*?["):
        return [full]
    directory, name_glob = posixpath.split(full)
    return [posixpath.join(directory, n) for n in host.listdir(directory) if fnmatch.fnmatch(n, name_glob)]


def load(host: HostRoot, path: str) -> ContainerdConfig:
    """The main file plus the files it imports (one level, as containerd 1.x does)."""
    main = read_file(host, path)
    config = ContainerdConfig(main)
    if main.data:
        imports = main.data.get("imports") or []
        if isinstance(imports, str):
            imports = [imports]
        for pattern in imports:
            if not isinstance(pattern, str):
                continue
            for target in _expand_import(host, posixpath.dirname(path), pattern):
                imported = read_file(host, target)
                if imported.exists:
                    config.imports.append(imported)
    return config


def _dig(data: dict[str, Any] | None, keys: tuple[str, ...]) -> Any:
    node: Any = data
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _file_version(f: ConfigFile, main: ConfigFile) -> int:
    # A drop-in without its own `version` is read with the main file's schema.
    if f.data is not None and "version" in f.data and f.version is not None:
        return f.version
    return main.version or 1


def runtime_handlers(config: ContainerdConfig) -> dict[str, dict[str, Any]]:
    """handler name -> table, later files winning per handler (how containerd resolves them)."""
    handlers: dict[str, dict[str, Any]] = {}
    for f in config.files:
        if not f.data:
            continue
        table = _dig(f.data, model.runtimes_table_path(_file_version(f, config.main)))
        if isinstance(table, dict):
            for name, body in table.items():
                if isinstance(body, dict):
                    handlers[name] = body
    return handlers


def runc_systemd_cgroup(config: ContainerdConfig) -> bool | None:
    """runc's SystemdCgroup as configured; None when the config leaves it at containerd's default (false)."""
    value: bool | None = None
    for f in config.files:
        if not f.data:
            continue
        version = _file_version(f, config.main)
        if version == 1:
            legacy = _dig(f.data, ("plugins", "cri", "systemd_cgroup"))
            if isinstance(legacy, bool):
                value = legacy
        found = _dig(f.data, (*model.runtimes_table_path(version), "runc", "options", "SystemdCgroup"))
        if isinstance(found, bool):
            value = found
    return value


def grpc_address(config: ContainerdConfig) -> str | None:
    value = _dig(config.main.data, ("grpc", "address"))
    return value if isinstance(value, str) and value else None
