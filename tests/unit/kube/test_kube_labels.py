"""Labels are a pure function of facts; the patch is a pure diff against the owned-labels annotation."""

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from nodeagent.kube.labels import (
    KATA_COMPAT_LABEL, OWNED_ANNOTATION, desired_labels, infer_state, label_patch, labels_view, owned_labels,
)
from tests.support.fake_apiserver import merge_patch

P = "sandbox.nodeagent.io/"
READY = {"registered": True, "served": True, "shim_present": True}


def facts(kvm=True, nested=None, in_vm=False, platform="systrap"):
    return {"virtualization": {"kvm_usable": kvm, "nested": nested, "in_vm": in_vm},
            "runtimes": {"gvisor": {"eligible": True, "platform": platform}, "kata": {"eligible": kvm}}}


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


_keys = st.sampled_from([P + k for k in ("gvisor", "kata", "kvm", "state", "team", "x")] + ["zone", "kubernetes.io/os"])
_maps = st.dictionaries(_keys, st.sampled_from(["true", "false", "a"]), max_size=8)


@hsettings(max_examples=300, deadline=None)
@given(current=_maps, owned=st.sets(_keys, max_size=6), desired=_maps)
def test_patch_properties(current, owned, desired):
    before = node(current, owned=sorted(owned))
    patch = label_patch(before, desired)
    after = merge_patch(before, patch) if patch else before
    labels = after["metadata"]["labels"]
    for key, value in desired.items():  # every desired label is there
        assert labels[key] == value
    for key, value in current.items():  # a label neither desired nor owned before is untouched
        if key not in desired and key not in owned:
            assert labels[key] == value
    for key in owned - set(desired):  # stale owned labels are gone
        assert key not in labels
    assert owned_labels(after) == set(desired)
    assert label_patch(after, desired) is None  # converged: a second run writes nothing


def test_nfd_feature_file_is_atomic_idempotent_and_removable(tmp_path):
    from nodeagent.host import HostRoot
    from nodeagent.kube.nfd import FEATURE_FILE, write_feature_file

    host = HostRoot(tmp_path)
    labels = {P + "state": "ready", P + "gvisor": "true"}
    assert write_feature_file(host, labels) is True
    text = host.read_text(FEATURE_FILE)
    assert text.splitlines()[1:] == [f"{P}gvisor=true", f"{P}state=ready"]
    mtime = host.path(FEATURE_FILE).stat().st_mtime_ns
    assert write_feature_file(host, labels) is False  # second run: not even rewritten
    assert host.path(FEATURE_FILE).stat().st_mtime_ns == mtime
    assert [p.name for p in host.path(FEATURE_FILE).parent.iterdir()] == ["nodeagent"]  # no temp files left
    assert write_feature_file(host, {}) is True and not host.exists(FEATURE_FILE)
    assert write_feature_file(host, {}) is False
