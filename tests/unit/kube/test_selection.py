"""Does the DaemonSet still select this node (SIGTERM: uninstall or not)?"""

from nodeagent.kube.selection import pod_spec_selects


def node(**labels):
    return {"metadata": {"name": "n1", "labels": labels}}


def test_no_selector_selects_every_node():
    assert pod_spec_selects({}, node())


def test_node_selector_must_match_all_keys():
    spec = {"nodeSelector": {"pool": "sandbox", "zone": "a"}}
    assert pod_spec_selects(spec, node(pool="sandbox", zone="a", other="x"))
    assert not pod_spec_selects(spec, node(pool="sandbox"))
    assert not pod_spec_selects(spec, node(pool="general", zone="a"))


def test_required_affinity_terms_are_ored_expressions_anded():
    spec = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["sandbox"]},
                              {"key": "nodeagent.io/skip", "operator": "DoesNotExist"}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["special"]}]},
    ]}}}}
    assert pod_spec_selects(spec, node(pool="sandbox"))
    assert not pod_spec_selects(spec, node(pool="sandbox", **{"nodeagent.io/skip": "1"}))
    assert not pod_spec_selects(spec, node(pool="general"))
    special = {"metadata": {"name": "special", "labels": {}}}
    assert pod_spec_selects(spec, special)


def test_operators():
    def sel(op, values=None):
        expr = {"key": "k", "operator": op}
        if values is not None:
            expr["values"] = values
        return {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [expr]}]}}}}
    assert pod_spec_selects(sel("NotIn", ["a"]), node(k="b"))
    assert not pod_spec_selects(sel("NotIn", ["a"]), node(k="a"))
    assert pod_spec_selects(sel("Exists"), node(k=""))
    assert pod_spec_selects(sel("Gt", ["3"]), node(k="4"))
    assert not pod_spec_selects(sel("Lt", ["3"]), node(k="x"))
    assert not pod_spec_selects(sel("Bogus", ["3"]), node(k="3"))
