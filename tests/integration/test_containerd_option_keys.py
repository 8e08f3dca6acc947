"""How REAL containerd decodes runtime option keys: go-toml v1 (1.x) and go-toml v2 (2.x) both
match a struct field case-insensitively, so `systemdCgroup = true` (kubespray) switches runc to
the systemd cgroup driver like `SystemdCgroup = true` does.

Evidence without systemd: with the systemd driver, runc refuses the cgroupfs-style path containerd
passes for a pod with no cgroup parent ("expected cgroupsPath to be of format slice:prefix:name");
with cgroupfs the pod runs. nodeagent.containerd.inspect.decoded_option must agree with it.
"""

from __future__ import annotations

import pytest

from nodeagent.containerd import cri
from nodeagent.containerd.inspect import decoded_option
from tests.support.containerd_daemon import minimal_config
from tests.support.oci_image import import_test_images

pytestmark = pytest.mark.integration


def runc_uses_systemd(containerd_factory, series: str, line: str) -> bool:
    daemon = containerd_factory(series, config=lambda work: minimal_config(series, work).replace(
        "SystemdCgroup = false", line))
    import_test_images(daemon)
    with cri.CriClient(daemon.socket) as client:
        try:
            pod = client.run_pod("runc", log_directory=str(daemon.work / "pods"))
        except cri.CriError as exc:
            assert "slice:prefix:name" in exc.message, exc.message
            return True
        client.destroy_pod(pod)
        return False


@pytest.mark.parametrize("series", ["1.7", "2.1"])
@pytest.mark.parametrize("line", ["systemdCgroup = true", "systemdcgroup = true", "SystemdCgroup = false"])
def test_option_keys_decode_case_insensitively(containerd_factory, series, line):
    key, value = (part.strip() for part in line.split("="))
    expected = decoded_option({key: value == "true"}, "SystemdCgroup") is True
    assert runc_uses_systemd(containerd_factory, series, line) is expected
