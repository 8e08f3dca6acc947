"""The agent's rounds in a short-lived child (nodeagent/commands/agent_child.py): real converges on a fake
root with containerd 1.6's real binary (not running: `--restart none`), the suite's directory mirror
(Debian's real runsc, stand-in shims: see tests/support/mirror.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from nodeagent.commands.agent_child import ChildError, run_in_child
from nodeagent.settings import Settings
from tests.support.mirror import default_mirror
from tests.support.scenarios import install_containerd

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "root"
    (r / "etc/containerd").mkdir(parents=True)
    install_containerd(r, "1.6")
    shutil.copyfile(REPO / "tests/fixtures/containerd/default-1.6.toml", r / "etc/containerd/config.toml")
    return r


def settings(root: Path, **kw) -> Settings:
    kw.setdefault("mirror", str(default_mirror()))
    return Settings(root=str(root), runtime="gvisor", restart="none", skip_eligibility=True, log_format="json", **kw)


def test_a_round_in_a_child_converges_and_reports_what_it_did(root):
    first = run_in_child(settings(root))
    assert first.changed and not first.restarted
    assert os.readlink(root / "usr/local/bin/runsc").startswith("/opt/nodeagent/gvisor/")
    assert b"runsc" in (root / "etc/containerd/config.toml").read_bytes()
    assert not run_in_child(settings(root)).changed


def test_a_failing_round_brings_back_its_message_hint_and_exit_code(root, tmp_path):
    before = (root / "etc/containerd/config.toml").read_bytes()
    with pytest.raises(ChildError) as exc:
        run_in_child(settings(root, mirror=str(tmp_path / "no-such-mirror")))
    assert exc.value.message and exc.value.hint and exc.value.exit_code == 2
    assert (root / "etc/containerd/config.toml").read_bytes() == before



def test_the_resident_agent_never_loads_the_converge_code(root):
    """What the child is for: grpc, requests and the artifact code stay out of the agent itself."""
    env = {**os.environ, "NODEAGENT_MIRROR": str(default_mirror()), "NODEAGENT_LOG_FORMAT": "json",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "nodeagent", "--root", str(root), "agent", "--runtime", "gvisor",
                             "--skip-eligibility", "--restart", "none", "--interval", "300",
                             "--listen", "127.0.0.1:0"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        port = None
        while port is None and time.monotonic() < deadline:
            listening = [c for c in psutil.Process(proc.pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN]
            port = listening[0].laddr.port if listening else None
            time.sleep(0.1)
        ready = False
        while not ready and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                    ready = resp.status == 200
            except OSError:
                time.sleep(0.2)
        assert ready, "the agent never became ready"
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "grpc" not in maps and "_cffi" not in maps, "the converge's native modules are in the agent"
        assert psutil.Process(proc.pid).children() == []  # the round's child is gone
    finally:
        proc.terminate()
        proc.wait(30)
