"""`nodeagent.runtimes`: the registry (`NAMES`, `ALL`, `get`) and the questions asked of every plug-in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nodeagent import runtimes
from nodeagent.runtimes.base import Runtime

REPO = Path(__file__).resolve().parents[3]


def test_get_returns_each_modules_runtime_object():
    for name in runtimes.NAMES:
        rt = runtimes.get(name)
        assert isinstance(rt, Runtime) and rt.name == name
        assert rt is sys.modules[f"nodeagent.runtimes.{name}"].RUNTIME


@pytest.mark.parametrize("name", ["runc", "base", "runsc_toml", "GVISOR", ""])
def test_get_refuses_names_outside_the_registry(name):
    """Modules of this package that are not plug-ins (base, runsc_toml) are not runtimes."""
    with pytest.raises(KeyError):
        runtimes.get(name)


def test_all_is_every_plugin_in_registry_order():
    assert runtimes.ALL == runtimes.get_all() == tuple(runtimes.get(n) for n in runtimes.NAMES)
    assert [rt.name for rt in runtimes.ALL] == ["gvisor", "kata"]
    with pytest.raises(AttributeError):
        runtimes.NOT_A_NAME  # noqa: B018


def test_selected_expands_all():
    assert runtimes.selected("all") == list(runtimes.NAMES)
    assert runtimes.selected("kata") == ["kata"]


def test_option_roles_and_their_owner():
    assert runtimes.option_roles() == frozenset({"runsc"})
    assert runtimes.owner_of_role("runsc") == "gvisor"
    assert runtimes.owner_of_role("config") is None and runtimes.owner_of_role("") is None


def test_importing_the_package_imports_no_plugin():
    """The plug-ins import artifacts/, containerd/ and detect/, which import this package: eager
    imports here would be a cycle. A fresh interpreter shows what `import nodeagent.runtimes` loads."""
    code = ("import sys, nodeagent.runtimes as r; "
            "print(sorted(m for m in sys.modules if m.startswith('nodeagent.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['nodeagent.runtimes']"
