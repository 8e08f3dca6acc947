"""Rows on a converged fake root whose running containerd 1.6 test daemon already serves the handlers.

(a) a no-op converge (`install`: detection, plan, `containerd config dump`, CRI status; nothing
    to change, no restart) vs the import floor;
(f) an idle `nodeagent agent --interval 300` after its first converge: peak RSS and CPU over
    the window (60 s; --quick 15 s);
plus the test daemon's PID over the no-op runs (restarts: 0).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil

from bench.common import IMPORTS, PY, SOCKET, env, interleaved, ratio_row, row, timed
from tests.support.containerd_daemon import new_daemon
from tests.support.mirror import default_mirror
from tests.support.scenarios import install_containerd

INSTALL = ["install", "--runtime", "all", "--skip-eligibility", "--restart", "none"]


def root_env() -> dict[str, str]:
    return env(NODEAGENT_MIRROR=str(default_mirror()))


def converged_root(base: Path):
    """A root with nodeagent's handlers installed and a running test daemon serving them."""
    root = base / "root"
    (root / "etc/containerd").mkdir(parents=True)
    install_containerd(root, "1.6")
    daemon = new_daemon("1.6", base, start=False)
    (root / "etc/containerd/config.toml").write_bytes(daemon.config_path.read_bytes())
    daemon.config_path.unlink()
    daemon.config_path.symlink_to(root / "etc/containerd/config.toml")  # the daemon reads the root's config
    (root / "run/containerd").mkdir(parents=True)
    (root / SOCKET.lstrip("/")).symlink_to(daemon.socket)
    daemon.start()
    args = [PY, "-m", "nodeagent", "--root", str(root), "-o", "json"]
    timed(args + INSTALL, env=root_env())
    daemon.restart()  # what --restart would do on a node; now CRI serves runsc and kata
    return root, daemon, args


def bench_noop(root_args: list[str], daemon, runs: int) -> list[dict]:
    pid = daemon.pid
    check = subprocess.run(root_args + INSTALL, capture_output=True, text=True, env=root_env())
    report = json.loads(check.stdout)
    assert report["changed"] is False and not report["restart"], report
    floor = lambda: timed([PY, "-c", IMPORTS])  # noqa: E731
    noop = lambda: timed(root_args + INSTALL, env=root_env())  # noqa: E731
    f, s = interleaved(floor, noop, runs)
    restarts = 0 if daemon.pid == pid else 1
    return [
        ratio_row("noop", "no-op converge (install on a converged root, running containerd 1.6, CRI checks) "
                  "vs imports", s, f, 1.5),
        row("restarts_noop_daemon", f"containerd restarts over {runs + 1} no-op converges (test daemon PID)",
            restarts, None, "0", restarts == 0, unit="restarts"),
    ]


def _listen_address(proc: subprocess.Popen, timeout: float = 60) -> str:
    """The agent's health endpoint (it binds port 0): its listening socket, seen from outside."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"agent exited early ({proc.returncode})")
        for conn in psutil.Process(proc.pid).net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN:
                return f"{conn.laddr.ip}:{conn.laddr.port}"
        time.sleep(0.1)
    raise SystemExit("agent never listened")


def _ready(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/readyz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _tree(p: psutil.Process) -> list[psutil.Process]:
    try:
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _rss(procs: list[psutil.Process]) -> int:
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:  # a child that just ended
            pass
    return total


def bench_idle_agent(root_args: list[str], window: float) -> list[dict]:
    """RSS is the agent's and any child's it has during the window (a child converge counts)."""
    argv = root_args + ["agent", *INSTALL[1:], "--interval", "300", "--listen", "127.0.0.1:0"]
    proc = subprocess.Popen(argv, env=root_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        address = _listen_address(proc)
        deadline = time.monotonic() + 180
        while not _ready(address):  # /readyz: the first converge is done
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("agent never became ready")
            time.sleep(0.2)
        time.sleep(2)  # let the first converge's garbage settle
        p = psutil.Process(proc.pid)
        cpu0 = sum(p.cpu_times()[:4])
        start = time.monotonic()
        peak = 0
        while time.monotonic() - start < window:
            peak = max(peak, _rss(_tree(p)))
            time.sleep(0.5)
        cpu = (sum(p.cpu_times()[:4]) - cpu0) / (time.monotonic() - start) * 100
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    rss = peak / 1e6
    return [row("agent_rss", f"idle agent RSS over {window:.0f} s", rss, None, "< 40 MB", rss < 40, unit="MB"),
            row("agent_cpu", f"idle agent CPU over {window:.0f} s", cpu, None, "< 0.2 %", cpu < 0.2, unit="%")]
