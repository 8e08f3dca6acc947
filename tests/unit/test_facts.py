"""Typed facts: to_json() is the contract's shape, from_json() reads it back (partial dicts too)."""

import pytest

from nodeagent.detect import detect_host
from nodeagent.facts import ContainerdFacts, HostFacts, RuntimeVerdict
from nodeagent.host import HostRoot
from tests.support.golden_json import HOSTS, trees


@pytest.mark.parametrize("tree", trees())
def test_json_round_trips_on_every_captured_tree(tree):
    facts = detect_host(HostRoot(HOSTS / tree))
    assert HostFacts.from_json(facts.to_json()) == facts
    assert list(facts.to_json())[:6] == ["arch", "kernel", "virtualization", "containerd", "systemd", "runtimes"]


def test_a_verdict_without_a_platform_has_no_platform_keys():
    assert list(RuntimeVerdict(True, [], "systrap", "KVM is not usable").to_json()) == [
        "eligible", "platform", "platform_reason", "reasons"]
    assert RuntimeVerdict(False, ["no vsock"]).to_json() == {"eligible": False, "reasons": ["no vsock"]}


def test_partial_facts_take_the_defaults_and_ignore_unknown_keys():
    facts = HostFacts.from_json({"containerd": {"version": "2.1.9", "not_a_fact": 1},
                                 "runtimes": {"gvisor": {"platform": "kvm"}}})
    assert facts.containerd == ContainerdFacts(version="2.1.9")
    assert facts.verdict("gvisor") == RuntimeVerdict(False, [], "kvm") and facts.verdict("kata") is None
    assert facts.virtualization.kvm_usable is False and facts.arch is None
