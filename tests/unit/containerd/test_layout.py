"""containerd.layout: where handler tables must go so containerd serves them, per flavor and
containerd major version, read from config chains in fake roots (no containerd runs)."""

from __future__ import annotations

import pytest

from nodeagent.containerd import edit, layout
from nodeagent.containerd.imports import load_chain
from nodeagent.errors import ConfigError
from nodeagent.host import HostRoot
from nodeagent.runtimes import gvisor
from tests.support.scenarios import K3S_DIR

CONFIG = "/etc/containerd/config.toml"
CRI_V2 = '[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "registry.k8s.io/pause:3.10"\n'


def root(tmp_path, files: dict[str, str]) -> HostRoot:
    for path, text in files.items():
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return HostRoot(tmp_path)


def choose(host: HostRoot, flavor: str, config: str, major: int) -> layout.Layout:
    return layout.choose(host, flavor, config, load_chain(host, config, missing_ok=major >= 2), major)


def test_containerd_1x_edits_in_place_in_the_file_whose_cri_section_wins(tmp_path):
    host = root(tmp_path, {CONFIG: "version = 2\n" + CRI_V2})
    assert (choose(host, "containerd", CONFIG, 1).kind, choose(host, "containerd", CONFIG, 1).path) == ("inplace", CONFIG)
    host = root(tmp_path, {CONFIG: 'version = 2\nimports = ["/etc/containerd/conf.d/10-cri.toml"]\n',
                           "/etc/containerd/conf.d/10-cri.toml": "version = 2\n" + CRI_V2})
    chosen = choose(host, "containerd", CONFIG, 1)
    assert (chosen.kind, chosen.path, chosen.role) == ("inplace", "/etc/containerd/conf.d/10-cri.toml", "dropin")


def test_containerd_1x_refuses_a_version_3_config(tmp_path):
    host = root(tmp_path, {CONFIG: "version = 3\n"})
    with pytest.raises(ConfigError, match="containerd 1.x only reads versions 1 and 2") as exc:
        choose(host, "containerd", CONFIG, 1)
    assert "version = 2" in exc.value.hint


def test_containerd_2x_uses_an_imported_glob_or_adds_an_exact_import(tmp_path):
    host = root(tmp_path, {CONFIG: 'version = 2\nimports = ["/etc/containerd/config.d/*.toml"]\n'})
    chosen = choose(host, "containerd", CONFIG, 2)
    assert (chosen.kind, chosen.path, chosen.import_into) == ("dropin", "/etc/containerd/config.d/90-nodeagent.toml", None)
    host = root(tmp_path / "b", {CONFIG: "version = 2\n"})
    chosen = choose(host, "containerd", CONFIG, 2)
    assert (chosen.path, chosen.import_into, chosen.version) == ("/etc/containerd/conf.d/90-nodeagent.toml", CONFIG, 2)
    assert chosen.describe() == ("drop-in /etc/containerd/conf.d/90-nodeagent.toml, config version 2 "
                                 "(+ imports entry in /etc/containerd/config.toml)")


def test_the_drop_in_takes_the_highest_schema_in_play(tmp_path):
    """containerd 2.x ignores a v2 drop-in next to a v3 file without a word."""
    host = root(tmp_path, {CONFIG: "version = 3\n"})
    assert choose(host, "containerd", CONFIG, 2).version == 3
    host = root(tmp_path / "b", {CONFIG: "version = 1\n"})
    assert choose(host, "containerd", CONFIG, 2).version == 2


def test_k3s_writes_its_template_on_1x_and_a_drop_in_where_it_imports_one_on_2x(tmp_path):
    config = f"{K3S_DIR}/config.toml"
    host = root(tmp_path, {config: "version = 2\n"})
    chosen = choose(host, "k3s", config, 1)
    assert (chosen.kind, chosen.path, chosen.rendered_path) == ("template", f"{K3S_DIR}/config.toml.tmpl", config)
    host = root(tmp_path / "v3", {config: "version = 3\n"})
    assert choose(host, "k3s", config, 2).path == f"{K3S_DIR}/config-v3.toml.tmpl"
    imports_dir = f'version = 3\nimports = ["{K3S_DIR}/config-v3.toml.d/*.toml"]\n'
    host = root(tmp_path / "new-k3s", {config: imports_dir})
    chosen = choose(host, "k3s", config, 2)
    assert (chosen.kind, chosen.path) == ("dropin", f"{K3S_DIR}/config-v3.toml.d/90-nodeagent.toml")
    assert choose(host, "k3s", config, 1).kind == "template"  # 1.x: a partial CRI drop-in would replace the section


def test_an_operators_k3s_template_is_kept_and_refused_without_the_base_line(tmp_path):
    config = f"{K3S_DIR}/config.toml"
    host = root(tmp_path, {config: "version = 2\n", f"{K3S_DIR}/config.toml.tmpl": "version = 2\n# mine\n"})
    chosen = choose(host, "k3s", config, 1)
    assert chosen.path == f"{K3S_DIR}/config.toml.tmpl"

    class Files:  # the planner's view of file contents (current bytes per path)
        def current(self, path):
            return host.read_bytes(path)

    with pytest.raises(ConfigError, match='does not include {{ template "base" . }}'):
        chosen.prepare(Files(), None)


def test_k0s_gets_a_drop_in_it_merges_itself_and_microk8s_its_template_in_place(tmp_path):
    host = root(tmp_path, {"/etc/k0s/containerd.toml": 'version = 2\nimports = ["/etc/k0s/containerd.d/*.toml"]\n'})
    chosen = choose(host, "k0s", "/etc/k0s/containerd.toml", 1)
    assert (chosen.kind, chosen.path, chosen.needs_restart) == ("dropin", "/etc/k0s/containerd.d/nodeagent.toml", False)
    assert chosen.validate_path is None  # the main config imports it: validate the whole chain
    template = "/var/snap/microk8s/current/args/containerd-template.toml"
    host = root(tmp_path / "mk", {template: "version = 2\n"})
    assert (choose(host, "microk8s", template, 1).kind, choose(host, "microk8s", template, 1).path) == ("inplace", template)


def test_a_template_layout_appends_the_block_a_toml_one_edits_the_table(tmp_path):
    spec = gvisor.handler()
    template = layout.Layout("template", "/t.tmpl", 2, "template")
    text = template.add('{{ template "base" . }}\n', spec, edit.TextStyle())
    assert text.startswith('{{ template "base" . }}\n') and "io.containerd.runsc.v1" in text
