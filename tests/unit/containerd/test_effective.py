"""containerd.effective: two `config dump`s must differ only in the handlers nodeagent owns.
The pure comparison on hand-written dumps, then prove_only_ours with the REAL containerd 1.7."""

from __future__ import annotations

import pytest

from nodeagent.containerd import effective
from nodeagent.containerd.validate import effective_config, find_containerd
from nodeagent.errors import ConfigError
from nodeagent.host import HostRoot
from tests.support.scenarios import have_containerd, install_containerd

RUNTIMES = ("plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes")
CONFIG = "/etc/containerd/config.toml"
RUNSC = b'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\nruntime_type = "io.containerd.runsc.v1"\n'
RUNC = b'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\nruntime_type = "io.containerd.runc.v2"\n'


def dump(runtimes: dict, **top) -> dict:
    return {"version": 2, "imports": ["/tmp/copy-000.toml"], **top,
            "plugins": {"io.containerd.grpc.v1.cri": {"containerd": {"runtimes": runtimes}}}}


def test_go_zero_values_count_as_absent():
    assert effective.meaningful({"a": 0, "b": "", "c": False, "d": None, "e": {"f": []}, "g": 1, "h": True}) == {
        "g": 1, "h": True}


def test_only_owned_handlers_and_the_imports_list_may_differ():
    before = dump({"runc": {"runtime_type": "io.containerd.runc.v2"}})
    after = dump({"runc": {"runtime_type": "io.containerd.runc.v2", "options": {"BinaryName": ""}},
                  "runsc": {"runtime_type": "io.containerd.runsc.v1"}})
    after["imports"] = ["/tmp/other-copy.toml"]
    assert effective.unexpected_changes(before, after, {"runsc"}) == []
    assert effective.unexpected_changes(before, after, set()) == [
        ".".join(RUNTIMES) + ".runsc added"]
    changed = dump({"runc": {"runtime_type": "io.containerd.runc.v2"}}, oom_score=-999)
    assert effective.unexpected_changes(before, changed, {"runsc"}) == ["oom_score added"]
    assert effective.differences({"a": {"b": 1}}, {"a": {"b": 2}}) == ["a.b changed (1 -> 2)"]


@pytest.fixture
def host(tmp_path):
    if not have_containerd("1.7"):
        pytest.skip("containerd 1.7 is not installed here (scripts/setup-test-env)")
    (tmp_path / "etc/containerd").mkdir(parents=True)
    (tmp_path / CONFIG.lstrip("/")).write_bytes(b"version = 2\noom_score = -500\n")
    install_containerd(tmp_path, "1.7")
    return HostRoot(tmp_path)


def test_real_containerd_sees_only_our_handlers_added(host):
    binary = find_containerd(host, "containerd")
    # containerd 1.x drops its built-in runc once any handler is written out: the proof sees it
    after = effective_config(host, CONFIG, {CONFIG: b"version = 2\noom_score = -500\n" + RUNSC}, binary)
    with pytest.raises(ConfigError, match=r"runtimes\.runc removed"):
        effective.prove_only_ours(host, CONFIG, after, {"runsc"}, binary)
    # which is why the planner writes runc out too, and owns that table
    after = effective_config(host, CONFIG, {CONFIG: b"version = 2\noom_score = -500\n" + RUNSC + RUNC}, binary)
    assert effective.prove_only_ours(host, CONFIG, after, {"runsc", "runc"}, binary) is None


def test_real_containerd_catches_a_change_beyond_our_handler(host):
    binary = find_containerd(host, "containerd")
    after = effective_config(host, CONFIG, {CONFIG: b"version = 2\noom_score = 0\n" + RUNSC + RUNC}, binary)
    with pytest.raises(ConfigError, match="beyond nodeagent's handlers: oom_score removed$") as exc:
        effective.prove_only_ours(host, CONFIG, after, {"runsc", "runc"}, binary)
    assert "nothing was changed" in exc.value.hint


def test_when_todays_config_cannot_load_only_the_new_one_is_judged(host):
    binary = find_containerd(host, "containerd")
    after = effective_config(host, CONFIG, {CONFIG: b"version = 2\n" + RUNSC}, binary)
    note = effective.prove_only_ours(host, CONFIG, after, {"runsc"}, binary,
                                     baseline={CONFIG: b'version = 2\noom_score = "high"\n'})
    assert note.startswith("containerd cannot load the current config") and "only the new one was checked" in note
