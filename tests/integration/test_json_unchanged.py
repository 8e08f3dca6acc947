"""The contract's JSON stays byte-for-byte what main printed before facts became typed
(issue 12's acceptance): `detect`, `plan` and `install --dry-run` on every captured host tree,
against goldens captured from main at 893877f (tests/support/golden_json.py re-captures)."""

import pytest

from tests.support.golden_json import COMMANDS, golden_path, render, trees


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("tree", trees())
def test_json_output_is_unchanged(tree, command):
    assert render(tree, command) == golden_path(tree, command).read_text()


def test_every_tree_has_its_goldens():
    # a tree added without goldens would otherwise be silently unchecked
    missing = [str(golden_path(t, c)) for t in trees() for c in COMMANDS if not golden_path(t, c).exists()]
    assert not missing
