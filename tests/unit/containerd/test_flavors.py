"""containerd.flavors: the one table of where each distribution keeps containerd's pieces, and
the lookup every layer uses (an unknown or missing flavor means plain containerd)."""

from __future__ import annotations

import posixpath

from nodeagent.containerd.flavors import FLAVORS, flavor_of


def test_the_detect_contract_flavors_are_all_in_the_table():
    assert set(FLAVORS) == {"containerd", "k3s", "rke2", "k0s", "microk8s"}
    assert all(name == flavor.name for name, flavor in FLAVORS.items())


def test_an_unknown_or_missing_flavor_is_plain_containerd():
    assert flavor_of(None) is FLAVORS["containerd"] and flavor_of("nomad") is FLAVORS["containerd"]
    assert flavor_of("k3s").socket == "/run/k3s/containerd/containerd.sock"


def test_every_path_is_host_absolute_and_generated_configs_name_their_source():
    for flavor in FLAVORS.values():
        paths = [flavor.config, flavor.socket, *flavor.binaries, *flavor.templates, *flavor.files]
        paths += [p for p in (flavor.dropin_dir, flavor.rendered) if p]
        assert all(posixpath.isabs(p) and posixpath.normpath(p) == p for p in paths), flavor.name
    # k3s/rke2 render config.toml from a template; editing the rendered file would be lost at restart
    for name in ("k3s", "rke2"):
        assert all(t.endswith(".tmpl") and posixpath.dirname(t) == posixpath.dirname(FLAVORS[name].config)
                   for t in FLAVORS[name].templates)
    assert FLAVORS["microk8s"].rendered != FLAVORS["microk8s"].config
