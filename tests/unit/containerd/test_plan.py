"""A refused handler names what differs, in the operator's terms (their values, their file)."""

from __future__ import annotations

import pytest

from nodeagent.facts import HostFacts
from nodeagent.containerd.plan import differing_keys, plan_install
from nodeagent.errors import ConflictError
from nodeagent.host import HostRoot
from nodeagent.runtimes import gvisor


def test_differing_keys_lists_missing_and_other_values():
    wanted = gvisor.handler().table()
    assert differing_keys({"runtime_type": "io.containerd.runsc.v1"}, wanted) == [
        "pod_annotations missing", "options.TypeUrl missing", "options.ConfigPath missing"]
    theirs = {"runtime_type": "io.containerd.runc.v2", "options": {"TypeUrl": "x", "ConfigPath": gvisor.RUNSC_CONFIG_PATH}}
    assert differing_keys(theirs, wanted) == ["runtime_type is 'io.containerd.runc.v2'", "pod_annotations missing",
                                              "options.TypeUrl is 'x'"]
    assert differing_keys({**wanted, "extra": 1}, wanted) == []


def test_conflict_names_the_file_and_says_why_nodeagent_does_not_adopt(tmp_path):
    config = tmp_path / "etc/containerd/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\n'
                      '  runtime_type = "io.containerd.runsc.v1"\n')
    facts = HostFacts.from_json({"containerd": {"version": "1.7.24", "config_path": "/etc/containerd/config.toml"}})
    with pytest.raises(ConflictError) as err:
        plan_install(HostRoot(tmp_path), [gvisor.handler()], facts)
    assert err.value.message.endswith(
        "options.TypeUrl missing, options.ConfigPath missing (in /etc/containerd/config.toml)")
    assert "--force" in err.value.hint and "does not adopt" in err.value.hint
