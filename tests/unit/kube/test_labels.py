"""Labels are a pure function of facts; the patch is a pure diff against the owned-labels annotation."""

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from nodeagent.facts import HostFacts
from nodeagent.kube.labels import (
    KATA_COMPAT_LABEL, OWNED_ANNOTATION, desired_labels, infer_state, label_patch, labels_view, manageable,
    owned_labels,
)
from tests.support.fake_apiserver import merge_patch

P = "sandbox.nodeagent.io/"
READY = {"registered": True, "served": True, "shim_present": True}


def facts(kvm=True, nested=None, in_vm=False, platform="systrap"):
    return HostFacts.from_json({"virtualization": {"kvm_usable": kvm, "nested": nested, "in_vm": in_vm},
                                "runtimes": {"gvisor": {"eligible": True, "platform": platform}, "kata": {"eligible": kvm}}})


def test_ready_runtimes_get_true_labels_and_platform():
    got = desired_labels(facts(platform="kvm"), {"gvisor": READY, "kata": READY}, "ready", kata_compat=True)
    assert got == {
        P + "kvm": "true", P + "nested-virt": "false", P + "state": "ready",
        P + "gvisor": "true", P + "gvisor-platform": "kvm", P + "kata": "true", KATA_COMPAT_LABEL: "true",
    }


@pytest.mark.parametrize("missing", ["registered", "served", "shim_present"])
def test_runtime_label_absent_unless_all_three_hold(missing):
    status = dict(READY, **{missing: False})
    got = desired_labels(facts(), {"gvisor": status, "kata": status}, "degraded", kata_compat=True)
    assert P + "gvisor" not in got and P + "kata" not in got
    assert P + "gvisor-platform" not in got and KATA_COMPAT_LABEL not in got
    assert "false" not in {got.get(P + "gvisor"), got.get(P + "kata")}


def test_nested_virt_uses_module_parameter_else_kvm_inside_a_vm():
    assert desired_labels(facts(nested=True), {}, "ready")[P + "nested-virt"] == "true"
    assert desired_labels(facts(nested=False, in_vm=True), {}, "ready")[P + "nested-virt"] == "false"
    # kvm_pvm has no `nested` parameter: usable KVM inside a VM is nested by definition
    assert desired_labels(facts(nested=None, in_vm=True), {}, "ready")[P + "nested-virt"] == "true"
    assert desired_labels(facts(kvm=False, nested=None, in_vm=True), {}, "ready")[P + "nested-virt"] == "false"


def test_removing_drops_runtime_labels_and_custom_prefix():
    got = desired_labels(facts(), {"gvisor": READY}, "removing", prefix="example.com/")
    assert got == {"example.com/kvm": "true", "example.com/nested-virt": "false", "example.com/state": "removing"}
    with pytest.raises(ValueError):
        desired_labels(facts(), {}, "weird")


def test_infer_state():
    assert infer_state({"gvisor": READY, "kata": {}}) == "ready"
    assert infer_state({"gvisor": READY, "kata": dict(READY, served=False)}) == "degraded"
    assert infer_state({"gvisor": {"registered": False}, "kata": {}}) == "installing"


def node(labels, owned=None, **annotations):
    if owned is not None:
        annotations[OWNED_ANNOTATION] = ",".join(owned)
    return {"metadata": {"name": "n", "labels": dict(labels), "annotations": dict(annotations)}}


def test_patch_keeps_foreign_labels_even_under_our_prefix_and_drops_stale_owned():
    current = node({P + "gvisor": "true", P + "kata": "true", P + "team": "blue", "zone": "a"},
                   owned=[P + "gvisor", P + "kata"], other="x")
    desired = {P + "gvisor": "true", P + "state": "ready"}
    patch = label_patch(current, desired)
    assert patch == {"metadata": {
        "labels": {P + "state": "ready", P + "kata": None},
        "annotations": {OWNED_ANNOTATION: f"{P}gvisor,{P}state"},
    }}
    after = merge_patch(current, patch)
    assert after["metadata"]["labels"] == {P + "gvisor": "true", P + "state": "ready", P + "team": "blue", "zone": "a"}
    assert after["metadata"]["annotations"]["other"] == "x"
    assert label_patch(after, desired) is None


def test_patch_never_removes_a_label_we_do_not_own():
    current = node({P + "kata": "true"})  # set by someone else, no annotation
    assert label_patch(current, {P + "state": "ready"}) == {"metadata": {
        "labels": {P + "state": "ready"}, "annotations": {OWNED_ANNOTATION: P + "state"}}}


def test_nothing_desired_removes_our_labels_and_the_annotation():
    current = node({P + "state": "removing", "x": "y"}, owned=[P + "state"])
    patch = label_patch(current, {})
    assert patch == {"metadata": {"labels": {P + "state": None}, "annotations": {OWNED_ANNOTATION: None}}}
    assert label_patch(merge_patch(current, patch), {}) is None


def test_labels_view_matches_the_contract_shape():
    view = labels_view({P + "state": "ready", P + "kvm": "true"})
    assert list(view) == ["labels", "annotations"]
    assert view["annotations"] == {OWNED_ANNOTATION: f"{P}kvm,{P}state"}


_ours = st.sampled_from([P + k for k in ("gvisor", "kata", "kvm", "state", "team", "x")] + [KATA_COMPAT_LABEL])
_foreign = st.sampled_from(["zone", "kubernetes.io/os", "node-restriction.kubernetes.io/zone",
                            "node-role.kubernetes.io/control-plane", "sandbox.nodeagent.io.evil.com/gvisor"])
_keys = st.one_of(_ours, _foreign)
_values = st.sampled_from(["true", "false", "a"])


@hsettings(max_examples=300, deadline=None)
@given(current=st.dictionaries(_keys, _values, max_size=8), owned=st.sets(_keys, max_size=6),
       desired=st.dictionaries(_ours, _values, max_size=8))
def test_patch_properties(current, owned, desired):
    before = node(current, owned=sorted(owned))
    patch = label_patch(before, desired)
    after = merge_patch(before, patch) if patch else before
    labels = after["metadata"]["labels"]
    for key, value in desired.items():  # every desired label is there
        assert labels[key] == value
    for key, value in current.items():  # a label not desired and not ours to manage is untouched
        if key not in desired and (key not in owned or not manageable(key)):
            assert labels[key] == value
    for key in owned - set(desired):  # stale owned labels under the prefix are gone
        if manageable(key):
            assert key not in labels
    assert owned_labels(after) == set(desired)
    assert label_patch(after, desired) is None  # converged: a second run writes nothing


def test_owned_annotation_naming_foreign_keys_never_removes_them():
    """Security review H2: the annotation is writable by whoever can edit the Node; it must not
    make the agent delete labels outside its prefix (the kubelet itself may not set
    node-restriction.kubernetes.io/*)."""
    foreign = {"node-restriction.kubernetes.io/zone": "secure", "node-role.kubernetes.io/control-plane": ""}
    current = node({**foreign, P + "kata": "true"}, owned=[*foreign, P + "kata"])
    patch = label_patch(current, {P + "state": "ready"})
    assert patch["metadata"]["labels"] == {P + "state": "ready", P + "kata": None}
    assert merge_patch(current, patch)["metadata"]["labels"] == {**foreign, P + "state": "ready"}


def test_custom_prefix_cleans_up_our_old_labels_but_nothing_foreign():
    current = node({P + "gvisor": "true", "example.com/gvisor": "true", "zone": "a"},
                   owned=[P + "gvisor", "zone"])
    patch = label_patch(current, {"example.com/state": "ready"}, prefix="example.com/")
    assert patch["metadata"]["labels"] == {"example.com/state": "ready", P + "gvisor": None}


def test_a_desired_label_outside_the_prefix_is_refused():
    with pytest.raises(ValueError, match="not ours to set"):
        label_patch(node({}), {"node-role.kubernetes.io/control-plane": ""})
    with pytest.raises(ValueError, match="not ours to set"):
        label_patch(node({}), {"kvm": "true"}, prefix="")  # "" is no prefix, not "every key"
    assert manageable(P + "x", "") and not manageable("x", "")
