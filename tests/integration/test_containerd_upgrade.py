"""containerd replaced under nodeagent, as an OS upgrade does, with the REAL 1.7 and 2.1 binaries:
the node's files stay, the binary (and dpkg's version) change, and the next converge must leave
runsc and kata served exactly once by a real daemon, runc kept, then be a no-op.

Upgrade 1.7 -> 2.1: the in-place v2 tables are read by 2.1 as they are (it migrates v2).
Downgrade 2.1 -> 1.7: our 2.x drop-in would replace 1.7's whole CRI section (containerd#5837),
so converge moves the handlers in place and deletes it (nodeagent.containerd.downgrade); a
version 3 main file cannot be read by 1.7 at all: install refuses with error + hint, writing nothing.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from nodeagent.containerd import apply, cri, validate
from nodeagent.facts import HostFacts
from nodeagent.containerd.clashes import duplicate_handlers
from nodeagent.containerd.imports import load_chain
from nodeagent.containerd.plan import plan_install, plan_uninstall
from nodeagent.host import HostRoot
from nodeagent.runtimes import gvisor, kata
from tests.support.cli import assert_known_error, run_cli
from tests.support.containerd_daemon import minimal_config
from tests.support.scenarios import have_containerd, install_containerd
from tests.support.tree import diff_snapshots, snapshot

pytestmark = pytest.mark.integration
SPECS = [gvisor.handler(), kata.handler()]
CONFIG = "/etc/containerd/config.toml"
VERSIONS = {"1.7": "1.7.24", "2.1": "2.1.9"}


def facts(series: str) -> HostFacts:
    return HostFacts.from_json({"containerd": {"version": VERSIONS[series], "config_path": CONFIG, "flavor": "containerd"},
                                "runtimes": {"gvisor": {"platform": "systrap"}}})


def converge(host: HostRoot, series: str):
    plan = plan_install(host, SPECS, facts(series))
    apply.apply_install(host, plan)  # validated and proven by the root's (real) containerd
    return plan


def switch_binary(root: Path, series: str) -> None:
    (root / "usr/bin/containerd").unlink(missing_ok=True)
    install_containerd(root, series)


def served_once(containerd_factory, host: HostRoot, series: str, tmp: Path) -> None:
    """A real daemon of `series` on the node's files: CRI healthy, runc/runsc/kata each served once."""
    assert duplicate_handlers(load_chain(host, CONFIG, missing_ok=series.startswith("2"))) == []
    tmp.mkdir()
    text = Path(validate.copy_chain(host, CONFIG, {}, str(tmp))).read_text()
    daemon = containerd_factory(series, config=text)
    with cri.CriClient(daemon.socket) as client:
        status = client.status()
        assert status.ok, status.as_dict()
        types = status.runtime_types()
        assert types.get("runsc") == gvisor.RUNTIME_TYPE and types.get("kata") == kata.RUNTIME_TYPE
        assert "runc" in types
        raw = client.runtime.Status(client.pb.StatusRequest(verbose=True), timeout=10)
        listed = Counter(h.name for h in getattr(raw, "runtime_handlers", []) if h.name)
        assert all(count == 1 for count in listed.values()), listed
    daemon.stop()


def node(tmp_path: Path, series: str, config_series: str) -> tuple[HostRoot, bytes]:
    root = tmp_path / "root"
    (root / "etc/containerd").mkdir(parents=True)
    original = minimal_config(config_series, tmp_path / "opt-work").encode()
    (root / CONFIG.lstrip("/")).write_bytes(original)
    install_containerd(root, series)
    return HostRoot(root), original


def needs(*series: str) -> None:
    for s in series:
        if not have_containerd(s):
            pytest.skip(f"containerd {s} is not installed (run scripts/setup-test-env)")


def test_upgrade_17_to_21_keeps_handlers_served_once(containerd_factory, tmp_path):
    needs("1.7", "2.1")
    host, original = node(tmp_path, "1.7", "1.7")
    assert converge(host, "1.7").changed
    served_once(containerd_factory, host, "1.7", tmp_path / "chain-17")

    switch_binary(host.root, "2.1")
    second = converge(host, "2.1")
    assert not second.changed, second.render_text()
    served_once(containerd_factory, host, "2.1", tmp_path / "chain-21")
    third = plan_install(host, SPECS, facts("2.1"))
    assert not third.changed and not third.restart

    undo, state = plan_uninstall(host, None)
    apply.apply_uninstall(host, undo, state)
    assert host.path(CONFIG).read_bytes() == original


def test_downgrade_21_to_17_moves_our_dropin_in_place(containerd_factory, tmp_path):
    needs("1.7", "2.1")
    host, original = node(tmp_path, "2.1", "1.7")  # a v2 main, as 1.x-era nodes have
    first = converge(host, "2.1")
    assert host.exists("/etc/containerd/conf.d/90-nodeagent.toml"), first.render_text()
    served_once(containerd_factory, host, "2.1", tmp_path / "chain-21")

    switch_binary(host.root, "1.7")
    second = converge(host, "1.7")
    assert second.changed and any("containerd#5837" in n for n in second.notes)
    assert not host.exists("/etc/containerd/conf.d/90-nodeagent.toml")
    assert "conf.d" not in host.path(CONFIG).read_text()  # the imports entry we added is gone too
    served_once(containerd_factory, host, "1.7", tmp_path / "chain-17")
    third = plan_install(host, SPECS, facts("1.7"))
    assert not third.changed and not third.restart, third.render_text()

    undo, state = plan_uninstall(host, None)
    apply.apply_uninstall(host, undo, state)
    assert host.path(CONFIG).read_bytes() == original
    assert not host.exists("/etc/containerd/conf.d") and not host.exists(gvisor.RUNSC_CONFIG_PATH)


def test_downgrade_to_17_with_a_version_3_config_is_refused(tmp_path):
    needs("1.7", "2.1")
    host, _ = node(tmp_path, "2.1", "2.1")
    converge(host, "2.1")
    switch_binary(host.root, "1.7")
    before = snapshot(host.root)
    proc = run_cli("--root", str(host.root), "install", "--skip-eligibility", "--restart", "none")
    message = assert_known_error(proc, 2)
    assert "version 3" in message and "1.x" in message
    assert diff_snapshots(before, snapshot(host.root)) == []
