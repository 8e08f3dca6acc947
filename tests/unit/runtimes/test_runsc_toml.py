"""runsc.toml: keys nodeagent adds are indented like the keys already in [runsc_config] (gVisor's docs),
and everything there before stays byte for byte."""

from __future__ import annotations

from nodeagent.runtimes import gvisor, runsc_toml
from tests.support.scenarios import FIXTURES

CORPUS = FIXTURES / "corpus-external" / "inputs"


def test_runsc_toml_keys_follow_its_indentation():
    raw = (CORPUS / "gvisor-configuration-v2/etc/containerd/runsc.toml").read_bytes()
    new = runsc_toml.render(raw, "systrap", True, gvisor.RUNSC_CONFIG_PATH).decode()
    assert '\n  platform = "systrap"\n  systemd-cgroup = "true"\n' in new
    assert new.startswith(raw.decode())  # everything there before stays, byte for byte
