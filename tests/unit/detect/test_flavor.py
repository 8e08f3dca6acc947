"""detect.flavor: which containerd distribution a root shows, from its units and files.

Running processes (the strongest evidence, and who may count as one) need a live node:
tests/integration/test_discovery_trust.py. Here: the scoring of units and files, ties, the unit
picked to restart, and what never counts."""

import pytest

from nodeagent.detect import flavor
from nodeagent.host import HostRoot
from tests.support.hosttrees import HOSTS


def make(root, *paths):
    for rel in paths:
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("") if "." in path.name or path.parent.name == "bin" else path.mkdir(exist_ok=True)
    return HostRoot(root)


def test_nothing_is_plain_containerd(tmp_path):
    facts = flavor.detect(HostRoot(tmp_path))
    assert (facts.flavor.name, facts.evidence, facts.unit) == ("containerd", [], "containerd.service")


def test_plain_containerd_files_and_unit_are_not_scored(tmp_path):
    # plain containerd is the fallback, never a score: its unit and config are on k3s nodes too
    host = make(tmp_path, "/etc/systemd/system/containerd.service", "/etc/containerd/config.toml")
    facts = flavor.detect(host)
    assert (facts.flavor.name, facts.evidence) == ("containerd", [])


def test_unit_in_the_first_directory_found_counts_once(tmp_path):
    host = make(tmp_path, "/etc/systemd/system/k0sworker.service", "/lib/systemd/system/k0sworker.service")
    facts = flavor.detect(host)
    assert facts.flavor.name == "k0s"
    assert facts.evidence == ["unit /etc/systemd/system/k0sworker.service"]
    assert facts.unit == "k0sworker.service"


def test_installed_unit_is_the_one_to_restart(tmp_path):
    # an rke2 agent: rke2-server.service (the table's first) is not installed, rke2-agent.service is
    host = make(tmp_path, "/usr/local/lib/systemd/system/rke2-agent.service")
    facts = flavor.detect(host)
    assert (facts.flavor.name, facts.unit) == ("rke2", "rke2-agent.service")


def test_without_an_installed_unit_the_first_unit_is_named(tmp_path):
    facts = flavor.detect(make(tmp_path, "/var/lib/rancher/k3s"))
    assert (facts.flavor.name, facts.evidence, facts.unit) == ("k3s", ["file /var/lib/rancher/k3s"], "k3s.service")


def test_a_unit_outweighs_a_file(tmp_path):
    # k3s' leftovers (one file) next to an installed rke2 unit: the unit wins
    host = make(tmp_path, "/usr/local/bin/k3s", "/lib/systemd/system/rke2-server.service")
    assert flavor.detect(host).flavor.name == "rke2"


def test_more_files_outweigh_fewer(tmp_path):
    host = make(tmp_path, "/etc/k0s", "/var/lib/k0s", "/usr/local/bin/rke2")
    facts = flavor.detect(host)
    assert facts.flavor.name == "k0s"
    assert facts.evidence == ["file /var/lib/k0s", "file /etc/k0s"]


def test_a_tie_goes_to_the_first_flavor_in_the_table(tmp_path):
    # equal scores: the table's order decides (k3s before rke2), not the last one scored
    host = make(tmp_path, "/usr/local/bin/k3s", "/usr/local/bin/rke2")
    assert flavor.detect(host).flavor.name == "k3s"


def test_the_config_file_itself_is_evidence(tmp_path):
    host = make(tmp_path, "/etc/k0s/containerd.toml")
    assert flavor.detect(host).evidence == ["file /etc/k0s", "file /etc/k0s/containerd.toml"]


@pytest.mark.parametrize("directory", ["/run/systemd/system", "/home/user/.config/systemd/user"])
def test_units_elsewhere_do_not_count(tmp_path, directory):
    # transient/runtime units and user units are not where a distribution installs its service
    facts = flavor.detect(make(tmp_path, f"{directory}/k3s.service"))
    assert facts.flavor.name == "containerd"


def test_captured_tree_processes_are_never_evidence():
    # a captured tree has no processes of its own; this machine's are not the tree's
    facts = flavor.detect(HostRoot(HOSTS / "k3s-node"))
    assert facts.flavor.name == "k3s"
    assert facts.evidence and not any(e.startswith("process ") for e in facts.evidence)
