"""Where handler tables must go so containerd actually serves them.

* containerd 1.x (or an unknown version): edit in place. A partial drop-in would
  replace the whole CRI section (containerd#5837), so we never write one; if the CRI
  section already lives in an imported file, that file is the one edited.
* containerd 2.x: a drop-in (`90-nodeagent.toml`) in the directory of an existing
  `imports` glob, else `conf.d/` next to the config plus an exact `imports` entry.
  The drop-in uses the highest schema version in play (at least 2): containerd 2.x
  silently ignores a v2 drop-in next to a v3 file.
* k3s / rke2: the config is rendered at every start, so we write its template
  (`config.toml.tmpl`, or `config-v3.toml.tmpl` for containerd 2.x builds) that starts
  with `{{ template "base" . }}` and appends our tables. An existing template without
  that line replaces the distro's config wholesale; we refuse to touch it. Where the rendered
  config already imports k3s' own drop-in directory (`config.toml.d/` or `config-v3.toml.d/`,
  k3s-io/k3s#13680) and containerd is 2.x, a drop-in there instead: no template to own.
* k0s: a drop-in in /etc/k0s/containerd.d/ that k0s merges itself; no restart.
* microk8s: its args/containerd-template.toml, edited in place (a TOML file whose
  `${SNAP}` placeholders sit inside strings).
"""

from __future__ import annotations

import posixpath
import re
import tomllib
from dataclasses import dataclass, field

from nodeagent import runtimes as runtime_plugins
from nodeagent.containerd import edit, model, tomlparse
from nodeagent.containerd.imports import LoadedFile, absolute_import, glob_matches, is_glob, read_host_file
from nodeagent.containerd.inspect import cri_table_v1x
from nodeagent.containerd.flavors import FLAVORS, flavor_of
from nodeagent.errors import ConfigError
from nodeagent.host import HostRoot

DROPIN_NAME = "90-nodeagent.toml"
K0S_DROPIN_NAME = "nodeagent.toml"
BASE_TEMPLATE = re.compile(r'\{\{-?\s*template\s+"base"\s+\.\s*-?\}\}')
BASE_LINE = '{{ template "base" . }}\n'
DROPIN_HEADER = "# Sandbox runtime handlers, written by nodeagent; `nodeagent uninstall` removes this file.\n"


def default_config(flavor: str) -> str:
    return flavor_of(flavor).config


def source_of(host: HostRoot, flavor: str, config_path: str) -> str:
    """microk8s regenerates args/containerd.toml from its TOML template: the template is the config to edit."""
    spec = FLAVORS.get("microk8s")
    if flavor == "microk8s" and spec is not None and config_path == getattr(spec, "rendered", None):
        if host.exists(spec.config):  # detection normally reports the template already
            return spec.config
    return config_path


@dataclass
class Layout:
    kind: str  # inplace | dropin | template
    path: str  # the file our tables go into
    version: int  # schema version of that file
    role: str
    needs_restart: bool = True
    import_into: str | None = None  # file that needs an `imports` entry for `path`
    validate_path: str | None = None  # config to validate instead of the main one
    rendered_path: str | None = None  # template kind: the config rendered from it
    notes: list[str] = field(default_factory=list)
    main_style: edit.TextStyle | None = None  # a new drop-in writes like the main config does

    def describe(self) -> str:
        text = {"inplace": "edit in place", "dropin": "drop-in", "template": "template"}[self.kind]
        extra = f" (+ imports entry in {self.import_into})" if self.import_into else ""
        return f"{text} {self.path}, config version {self.version}{extra}"

    def add(self, text: str, spec: model.HandlerSpec, style: edit.TextStyle) -> str:
        if self.kind == "template":
            # a Go template is not TOML: append the same block; the rendered result is checked instead
            return edit.append_block(text, edit.render_runtime(self.version, spec, style))
        if self.main_style is not None and "[plugins." not in text:
            style = edit.TextStyle(crlf=style.crlf, bom=style.bom, single_quotes=self.main_style.single_quotes,
                                   indent=self.main_style.indent)
        return edit.add_runtime(text, self.version, spec, style, self.path)

    def prepare(self, files, plan) -> None:
        """Create the drop-in / template skeleton and the imports entry, once."""
        current = files.current(self.path)
        if self.kind == "dropin" and current is None:
            files.set(self.path, f"{DROPIN_HEADER}version = {self.version}\n".encode(), self.role)
        if self.kind == "template":
            if current is None:
                files.set(self.path, BASE_LINE.encode(), self.role)
            elif not BASE_TEMPLATE.search(current.decode("utf-8", errors="replace")):
                raise ConfigError(
                    f"{self.path} does not include {BASE_LINE.strip()}, so it replaces the distro's whole containerd "
                    "config; nodeagent will not add to it",
                    f"add the line {BASE_LINE.strip()} at the top of {self.path} (or add the handlers by hand)",
                )
        if self.import_into:
            raw = files.current(self.import_into) or b""
            text, style = edit.decode(raw, self.import_into)
            new = edit.add_import(text, self.path, style, self.import_into)
            if new != text:
                files.set(self.import_into, edit.encode(new, style), "config")
                plan.imports_added.append((self.import_into, self.path))
                if edit.imports_span(text) is None:
                    plan.imports_line_created.add(self.import_into)

    def validation_overrides(self, files, plan) -> dict[str, bytes | None]:
        """Files to check with containerd: for a template, the config it will render to."""
        overrides = {c.path: c.new for c in files.changes() if c.role not in runtime_plugins.option_roles()}
        if self.kind == "template" and self.rendered_path:
            rendered = files.current(self.rendered_path)
            if rendered is None:
                return {}
            text, style = edit.decode(rendered, self.rendered_path)
            present = edit.runtimes_of(tomlparse.parse(text, self.rendered_path), self.version)
            for name in plan.dropped:  # the template no longer renders our block for it
                if name in present:
                    text = edit.remove_runtime(text, self.version, name, style, self.rendered_path)
            for spec in plan.handlers:
                if spec.name in plan.updated and spec.name in present:  # the template's new block renders here
                    text = edit.remove_runtime(text, self.version, spec.name, style, self.rendered_path)
                    present = {k: v for k, v in present.items() if k != spec.name}
                if spec.name not in present:
                    text = edit.add_runtime(text, self.version, spec, style, self.rendered_path)
            overrides = {self.rendered_path: edit.encode(text, style)}
        return overrides

    def template_runtimes(self, files) -> dict[str, dict]:
        """Handlers a k3s/rke2 template adds (they reach config.toml only at the next start)."""
        if self.kind != "template":
            return {}
        raw = files.current(self.path)
        if raw is None:
            return {}
        text, _ = edit.decode(raw, self.path)
        plain = "\n".join(line for line in text.splitlines() if "{{" not in line)
        try:
            data = tomllib.loads(plain)
        except tomllib.TOMLDecodeError:
            return {}
        return edit.runtimes_of(data, self.version)


def choose(host: HostRoot, flavor: str, config_path: str, chain: list[LoadedFile], major: int) -> Layout:
    main = chain[0]
    merged_version = max(item.version for item in chain)
    if flavor in ("k3s", "rke2"):
        dropin = _k3s_dropin(main, merged_version, major)
        if dropin is not None:
            return dropin
        spec = FLAVORS[flavor]
        existing = [t for t in spec.templates if host.exists(t)]
        template = existing[0] if existing else next(
            t for t in spec.templates if ("-v3." in t) == (main.version >= 3)
        )
        return Layout("template", template, main.version, "template", rendered_path=config_path)
    if flavor == "k0s":
        directory = FLAVORS["k0s"].dropin_dir
        version = max(2, merged_version)
        path = f"{directory}/{K0S_DROPIN_NAME}"
        return Layout("dropin", path, version, "dropin", needs_restart=False,
                      validate_path=None if _imports_cover(main, path) else path)
    if flavor == "microk8s":
        return Layout("inplace", config_path, main.version, "config")
    if major >= 2:
        version = max(2, merged_version)
        main_style = edit.decode(read_host_file(host, main.path) or b"", main.path)[1]
        for entry in main.imports:
            pattern = absolute_import(entry, main.path)
            candidate = posixpath.join(posixpath.dirname(pattern), DROPIN_NAME)
            if is_glob(pattern) and not is_glob(posixpath.dirname(pattern)) and glob_matches(pattern, candidate):
                return Layout("dropin", candidate, version, "dropin", main_style=main_style)
        candidate = posixpath.join(posixpath.dirname(config_path), "conf.d", DROPIN_NAME)
        return Layout("dropin", candidate, version, "dropin", import_into=config_path, main_style=main_style)
    # containerd 1.x: in place, in the file whose CRI section wins
    if main.version >= 3:
        raise ConfigError(
            f"{config_path} is a version {main.version} config, but containerd 1.x only reads versions 1 and 2 "
            "(it silently drops the v3 sections)",
            "use `version = 2` with plugins.\"io.containerd.grpc.v1.cri\" for containerd 1.x",
        )
    target = main
    for item in chain:
        if cri_table_v1x(item) is not None:
            target = item
    role = "config" if target is main else "dropin"
    return Layout("inplace", target.path, target.version, role)


# k3s' base templates import a drop-in directory next to the template since k3s-io/k3s#13680
# (merged 2026-02-25): config.toml.d/ for the v2 template, config-v3.toml.d/ for v3. rke2 renders
# with k3s' agent code. The rendered config is the evidence, not a version table.
K3S_DROPIN_DIRS = ("config.toml.d", "config-v3.toml.d")


def _k3s_dropin(main: LoadedFile, merged_version: int, major: int) -> Layout | None:
    """A drop-in in the directory the rendered config imports, when this k3s/rke2 has one.

    Only for containerd 2.x: on 1.x a partial CRI drop-in replaces the whole CRI section
    (containerd#5837), so 1.x nodes keep the template.
    """
    if major < 2:
        return None
    for entry in main.imports:
        pattern = absolute_import(entry, main.path)
        directory = posixpath.dirname(pattern)
        if (is_glob(pattern) and posixpath.dirname(directory) == posixpath.dirname(main.path)
                and posixpath.basename(directory) in K3S_DROPIN_DIRS):
            candidate = posixpath.join(directory, DROPIN_NAME)
            if glob_matches(pattern, candidate):
                return Layout("dropin", candidate, max(2, merged_version), "dropin")
    return None


def _imports_cover(main: LoadedFile, path: str) -> bool:
    for entry in main.imports:
        pattern = absolute_import(entry, main.path)
        if pattern == path or (is_glob(pattern) and glob_matches(pattern, path)):
            return True
    return False
