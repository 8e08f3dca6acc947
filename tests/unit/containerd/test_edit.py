"""Added text looks like the file it joins (tests/fixtures/corpus-external): handler tables indented
like the file's own runtime tables, one `imports` entry per line where the array is written that
way (Talos). runsc.toml's indentation: tests/unit/runtimes/test_runsc_toml.py."""

from __future__ import annotations

import re

from nodeagent.containerd import edit
from nodeagent.runtimes import gvisor
from tests.support.scenarios import FIXTURES

CORPUS = FIXTURES / "corpus-external" / "inputs"


def read(case: str, path: str = "etc/containerd/config.toml") -> str:
    return (CORPUS / case / path).read_text()


def indent_of(text: str, pattern: str) -> str:
    return re.search(rf"^([ \t]*){pattern}", text, re.M).group(1)


def test_handler_tables_follow_the_indentation_of_the_runtime_tables_they_join():
    for case, version in (("kubespray-v2", 2), ("aks-nvidia-v2", 2), ("kubespray-kata-v4", 4), ("flatcar-v2", 2)):
        text, style = edit.decode(read(case).encode(), case)
        new = edit.add_runtime(text, version, gvisor.handler(), style, case)
        added = new[len(text):]
        runc_header = indent_of(text, r"\[[^\n]*runtimes\.(?:runc|'runc'|\"runc\"|nvidia|'nvidia')\]")
        assert indent_of(added, r"\[[^\n]*runtimes\.runsc\]") == runc_header, case
        runc_key = indent_of(text, r"runtime_type")
        assert indent_of(added, "runtime_type") == runc_key, case
        assert indent_of(added, "TypeUrl") == runc_key, case


def test_multi_line_imports_get_one_entry_per_line_and_lose_it_again():
    text = read("talos-v3")
    new = edit.add_import(text, "/etc/containerd/conf.d/90-nodeagent.toml", edit.TextStyle(), "talos")
    assert '    "/etc/cri/conf.d/cri.toml",\n    "/etc/containerd/conf.d/90-nodeagent.toml",\n]' in new
    assert edit.remove_import(new, "/etc/containerd/conf.d/90-nodeagent.toml", "talos") == text


def test_single_line_imports_stay_on_one_line():
    text = read("eks-al2-v2")
    new = edit.add_import(text, "/etc/containerd/x.toml", edit.TextStyle(), "eks")
    assert 'imports = ["/etc/containerd/config.d/*.toml", "/etc/containerd/x.toml"]' in new

