"""SIGTERM while `install` is still fetching: everything the run already did is undone.

`install --runtime all` links gVisor first, then downloads Kata. A real SIGTERM sent while
Kata's archive trickles in (a real HTTPS server on 127.0.0.1 with a per-chunk delay) reaches
error_handler's interruption; the undo journal then takes back gVisor's links, its version
directory and the cache entries of this run too, so the root is as it was (before the one
journal, gVisor stayed installed). The root holds a real containerd 1.6 binary and config.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nodeagent.settings import Settings
from tests.support import mirror_builder as builders
from tests.support.containerd_daemon import minimal_config
from tests.support.http_server import LoopbackServer, shared_tls
from tests.support.tree import diff_snapshots, snapshot
from tests.support.scenarios import install_containerd

pytestmark = pytest.mark.integration

KATA_ARCHIVE = f"kata/{Settings().kata_version}/kata-static-{Settings().kata_version}-amd64.tar.zst"


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc/containerd").mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_text(minimal_config("1.6", tmp_path / "daemon-work"))
    install_containerd(root, "1.6")
    for d in ("opt", "usr/local/bin"):  # there on every real node
        (root / d).mkdir(parents=True)
    return root


def _mirror(tmp_path: Path) -> Path:
    base = tmp_path / "mirror"
    builders.gvisor_tarball_release(base, "20240101.0")
    builders.kata_release(base, Settings().kata_version,
                          [*builders.kata_members(), builders.Member("./opt/kata/blob", data=os.urandom(400_000))])
    return base


def _wait_for(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_sigterm_during_the_second_download_undoes_the_first_runtimes_links(tmp_path):
    root = _root(tmp_path)
    before = snapshot(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODEAGENT_")}
    env.update(REQUESTS_CA_BUNDLE=str(shared_tls().ca), NO_PROXY="127.0.0.1,localhost", NODEAGENT_LOG_FORMAT="json")
    with LoopbackServer(_mirror(tmp_path), tls=shared_tls()) as srv:
        srv.fault(KATA_ARCHIVE, delay=1.0)  # 64 KiB a second: the download lasts while we signal
        proc = subprocess.Popen(
            [sys.executable, "-m", "nodeagent", "--root", str(root), "-o", "json", "install", "--runtime", "all",
             "--skip-eligibility", "--restart", "none", "--mirror", srv.url, "--gvisor-version", "20240101.0"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(lambda: any(s.method == "GET" and s.path.endswith(KATA_ARCHIVE) for s in srv.seen) or
                      proc.poll() is not None, "the Kata download to start")
            assert proc.poll() is None, proc.communicate()
            # gVisor is already linked at this point (its artifact step finished before Kata's began)
            assert os.readlink(root / "usr/local/bin/runsc") == "/opt/nodeagent/gvisor/20240101.0/runsc"
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-2:] == ["error: interrupted",
                                             "hint: run the same command again; it resumes safely"], err
    assert not (root / "usr/local/bin/runsc").is_symlink()
    changed = [c for c in diff_snapshots(before, snapshot(root)) if not c.startswith("added run")]
    assert changed == [], changed  # only the run lock file (/run/nodeagent.lock) stays, by design
