"""Ask the real containerd whether a candidate config is good, before it goes live.

The candidate and every file it imports are copied into a private temp directory and
each copy's `imports` is rewritten to the exact copies, in containerd's load order.
That works the same for `--root /` and for a foreign root (DaemonSet `/host`, test
trees) without chroot or mount namespaces, and the live files are never touched.
Then `containerd --config <copy> config dump` must succeed and list our handlers at
the CRI plugin that containerd version reads.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import tomllib
from typing import Any

from nodeagent.containerd import edit, model
from nodeagent.containerd.imports import expand_import, load_chain, read_host_file
from nodeagent.detect import trust
from nodeagent.containerd.flavors import flavor_of
from nodeagent.errors import CommandFailed, ConfigError
from nodeagent.host import HostRoot
from nodeagent.run import run


def find_containerd(host: HostRoot, flavor: str, explicit: str | None = None) -> str | None:
    """The containerd binary to validate with: explicit, else the flavor's or the host's own.

    Never a binary from outside the root: its version could differ from the host's and
    judge the config by the wrong rules (a v3 drop-in means nothing to containerd 1.x). Never
    one whose path any user but root could have changed (detect.trust): it runs as root.
    """
    if explicit:
        return explicit
    found = host.find_executable(flavor_of(flavor).binaries, "containerd",
                                 accept=lambda host_path: trust.path_verdict(host, host_path).trusted)
    return str(host.resolve(found)) if found else None


def _copy_chain(host: HostRoot, config_path: str, overrides: dict[str, bytes | None], workdir: str) -> str:
    chain = load_chain(host, config_path, overrides, missing_ok=True)  # containerd itself judges a missing one
    copies = {item.path: os.path.join(workdir, f"{index:03d}-{os.path.basename(item.path)}")
              for index, item in enumerate(chain)}
    for item in chain:
        raw = overrides[item.path] if item.path in overrides else read_host_file(host, item.path)
        text = (raw or b"").decode("utf-8")
        if item.imports:
            targets: list[str] = []
            for entry in item.imports:
                targets += [copies[m] for m in expand_import(host, entry, item.path, overrides) if m in copies]
            text = edit.set_imports(text, targets, edit.TextStyle())
        with open(copies[item.path], "w", encoding="utf-8") as fh:
            fh.write(text)
    return copies[config_path]


def copy_chain(host: HostRoot, config_path: str, overrides: dict[str, bytes | None], workdir: str) -> str:
    """Copy a config chain into `workdir` with `imports` pointing at the copies; returns the main copy."""
    return _copy_chain(host, config_path, overrides, workdir)


def dump_runtimes(dump: dict[str, Any]) -> dict[str, Any]:
    version = model.config_version(dump.get("version"))
    node: Any = dump
    for key in model.runtimes_table_path(version):
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def config_dump(binary: str, config_file: str) -> dict[str, Any]:
    try:
        proc = run([binary, "--config", config_file, "config", "dump"], timeout=60)
    except CommandFailed as exc:
        raise ConfigError(
            f"containerd rejects the planned config: {exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else exc}",
            "nothing was changed; fix the existing config (see `nodeagent plan`), then run again",
        ) from None
    try:
        return tomllib.loads(proc.stdout)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot read `containerd config dump` output: {exc}", None) from None


def effective_config(host: HostRoot, config_path: str, overrides: dict[str, bytes | None], binary: str) -> dict[str, Any]:
    """The whole config the real containerd would run with, for a config chain (with candidates).

    A main file that does not exist (yet) counts as empty: containerd's built-in defaults.
    """
    if config_path not in overrides and read_host_file(host, config_path) is None:
        overrides = {**overrides, config_path: b""}
    workdir = tempfile.mkdtemp(prefix="nodeagent-validate-")
    try:
        return config_dump(binary, _copy_chain(host, config_path, overrides, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def effective_dump(host: HostRoot, config_path: str, overrides: dict[str, bytes | None], binary: str) -> dict[str, Any]:
    """Handler tables as the real containerd reports them for a config chain (with candidates)."""
    return dump_runtimes(effective_config(host, config_path, overrides, binary))


def validate_candidate(
    host: HostRoot, config_path: str, overrides: dict[str, bytes | None], handlers: list[str], binary: str
) -> dict[str, Any]:
    """Run the real `config dump` on the candidate; returns the effective runtimes it reports."""
    return dump_runtimes(checked_candidate(host, config_path, overrides, handlers, binary))


def checked_candidate(
    host: HostRoot, config_path: str, overrides: dict[str, bytes | None], handlers: list[str], binary: str
) -> dict[str, Any]:
    """The candidate's whole effective config (one `config dump`), once it serves `handlers`."""
    config = effective_config(host, config_path, overrides, binary)
    missing = [h for h in handlers if h not in dump_runtimes(config)]
    if missing:
        raise ConfigError(
            f"containerd would not serve handler(s) {', '.join(missing)} with the planned config",
            "nothing was changed; check the config's version and imports (`nodeagent plan` shows the edit)",
        )
    return config
