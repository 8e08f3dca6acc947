"""nodeagent.dicts: nested reads through objects someone else wrote (Kubernetes, CRI)."""

from nodeagent.dicts import dig, items, table


def test_dig_walks_and_defaults_on_a_missing_null_or_scalar_level():
    node = {"metadata": {"name": "n1", "labels": None, "annotations": "oops"}}
    assert dig(node, "metadata", "name") == "n1"
    assert dig(node, "metadata", "labels") is None
    assert dig(node, "metadata", "annotations", "x") is None  # a string is not an object
    assert dig(node, "spec", "x", default="-") == "-"
    assert dig(None, "metadata") is None


def test_table_and_items_give_empty_containers_for_anything_else():
    obj = {"spec": {"a": 1}, "items": "not a list", "metadata": {"labels": ["x"]}}
    assert table(obj, "spec") == {"a": 1}
    assert table(obj, "metadata", "labels") == {}
    assert items(obj, "items") == [] and items({"items": [1, 2]}, "items") == [1, 2]
