"""The runsc.toml keys nodeagent writes are flags a real runsc accepts.

containerd-shim-runsc-v1 turns every `[runsc_config]` key into `--key=value` on runsc's command
line (https://gvisor.dev/docs/user_guide/containerd/configuration/). No real shim exists here
(tests/support notes), so the test does the shim's conversion and hands the flags to Debian's 2024
runsc through `runsc do`: a key runsc did not know, or a value it rejects, fails the sandbox.
"""

from __future__ import annotations

import subprocess
import tomllib

import pytest

from nodeagent.runtimes import runsc_toml
from tests.support.containerd_daemon import TESTENV

pytestmark = pytest.mark.integration
RUNSC_2024 = TESTENV / "runsc-2024/usr/bin/runsc"


@pytest.mark.skipif(not RUNSC_2024.exists(), reason="runsc 2024 not installed (scripts/setup-test-env)")
@pytest.mark.parametrize("net_raw", [False, True])
def test_written_keys_start_a_sandbox_and_debug_logs_land_in_the_directory(tmp_path, net_raw):
    logs = tmp_path / "runsc-logs"
    text = runsc_toml.render(None, "systrap", False, runsc_toml.PATH, net_raw=net_raw, debug_log=f"{logs}/")
    keys = tomllib.loads(text.decode())["runsc_config"]
    assert set(keys) == {"platform", "net-raw", "debug", "debug-log"}
    flags = [f"--{key}={value}" for key, value in keys.items()]  # what the shim passes
    state = tmp_path / "state"
    proc = subprocess.run([str(RUNSC_2024), "--root", str(state), "--network=none", *flags, "do", "uname", "-r"],
                          capture_output=True, text=True, timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "4.4.0"  # gVisor's Sentry answered, not the host kernel
    written = sorted(p.name for p in logs.iterdir())
    assert any(n.endswith(".boot.txt") for n in written) and any(n.endswith(".do.txt") for n in written), written
    boot = "".join(p.read_text(errors="replace") for p in logs.glob("*.boot.txt"))
    # the sandbox's own log names the flags it booted with
    assert f"--net-raw={str(net_raw).lower()}" in boot and "--platform=systrap" in boot
