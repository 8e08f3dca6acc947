"""`nodeagent detect` as a person and a program see it."""

import json

import pytest

from nodeagent.commands.detect import summary
from nodeagent.detect import detect_host
from nodeagent.host import HostRoot
from tests.support.cli import assert_known_error, run_cli
from tests.support.hosttrees import HOSTS


@pytest.mark.parametrize("name", sorted(p.name for p in HOSTS.iterdir() if p.is_dir()))
def test_text_summary_renders_for_every_tree(name):
    text = summary(detect_host(HostRoot(HOSTS / name)))
    rows = dict(line.split(None, 1) for line in text.splitlines()[:2])
    assert rows["architecture"] and rows["kernel"]
    assert "KVM usable" in text and "gVisor" in text and "Kata" in text


def test_text_summary_of_an_empty_root_says_unknown(tmp_path):
    text = summary(detect_host(HostRoot(tmp_path)))
    assert "architecture   unknown" in text
    assert "containerd     not found" in text
    assert "gVisor: architecture unknown is not supported" in text


def test_cli_json_and_text_agree():
    root = str(HOSTS / "k3s-node")
    as_json = run_cli("detect", "--root", root, "-o", "json")
    as_text = run_cli("-o", "text", "detect", "--root", root)
    assert as_json.returncode == as_text.returncode == 0
    facts = json.loads(as_json.stdout)
    assert facts["containerd"]["flavor"] == "k3s"
    assert "(k3s, not running)" in as_text.stdout


def test_cli_root_that_does_not_exist(tmp_path):
    assert "does not exist" in assert_known_error(run_cli("detect", "--root", str(tmp_path / "nope")), 2)
