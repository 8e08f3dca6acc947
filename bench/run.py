#!/usr/bin/env python3
"""All of nodeagent's benchmarks in one run: each a ratio against a floor measured side by side.

    python3 bench/run.py [--quick] [--json FILE]

Prints a table (measurement, floor, ratio, goal, ok/MISSED) and writes JSON to
bench/results/latest.json. Runs are interleaved (floor, subject, floor, subject, ...) so both see
the same machine load; the table shows medians. Everything is real: containerd 1.6 test daemons
on private sockets, this machine's systemd booted in namespaces with Debian's containerd.service
(tests/support/systemd_node.py), the suite's directory mirror (Debian's real runsc, stand-in
shims). Nothing on the real host is touched.

1. no-op converge (`install` on a converged root whose running containerd already serves the
   handlers: detection, plan, config validation, CRI status) vs importing nodeagent's own
   dependencies                                                                  goal <= 2x
2. `doctor` on the same root vs the same floor                                   goal <= 2.5x
3. a converge that changes the config, artifacts cached, on the systemd node with
   `--restart systemd` vs (import the dependencies + `systemctl restart containerd` until CRI
   answers ok), both inside the node; uninstall between runs                    goal <= 1.5x
4. download + verify of 256 MiB vs `curl | sha512sum` (bench/download.py)       goal <= 1.25x,
   peak RSS                                                                      < 80 MB
5. idle `nodeagent agent` (interval 300 s) RSS and CPU over 60 s (--quick: 15 s) goal < 50 MB,
                                                                                 < 0.5 % CPU
6. containerd restarts per converge, from systemd's MainPID (changed: 1, no-op: 0) and the test
   daemon's PID (no-op: 0)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from tests.support.containerd_daemon import new_daemon  # noqa: E402
from tests.support.mirror import default_mirror  # noqa: E402
from tests.unit.containerd.scenarios import install_containerd  # noqa: E402

PY = sys.executable
# what nodeagent itself imports on its install path (pyproject's runtime dependencies)
DEPS = "import tomlkit, psutil, requests, structlog, grpc, cri_api.v1.api_pb2, cri_api.v1.api_pb2_grpc"
SOCKET = "/run/containerd/containerd.sock"
INSTALL = ["install", "--runtime", "all", "--skip-eligibility"]

# floor for (3): what any restart-based installer must at least do, run inside the node
RESTART_FLOOR = f"""
{DEPS}
import subprocess, time
import grpc
from cri_api.v1 import api_pb2, api_pb2_grpc
subprocess.run(["systemctl", "restart", "containerd"], check=True)
while True:
    try:
        with grpc.insecure_channel("unix://{SOCKET}") as ch:
            st = api_pb2_grpc.RuntimeServiceStub(ch).Status(api_pb2.StatusRequest(), timeout=1).status
            if all(c.status for c in st.conditions):
                break
    except grpc.RpcError:
        pass
    time.sleep(0.02)
"""


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("NODEAGENT_")}
    e.update(NODEAGENT_MIRROR=str(default_mirror()), NODEAGENT_LOG_FORMAT="json", PYTHONPATH=str(REPO))
    return e


def timed(argv: list[str], ok=(0,), **kw) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)
    took = time.perf_counter() - start
    if proc.returncode not in ok:
        raise SystemExit(f"{argv} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return took


def interleaved(floor, subject, runs: int) -> tuple[float, float]:
    floors, subjects = [], []
    for _ in range(runs):
        floors.append(floor())
        subjects.append(subject())
    return statistics.median(floors), statistics.median(subjects)


def row(name: str, value: float, floor: float | None, goal: str, ok: bool, unit: str = "s", **extra) -> dict:
    return {"name": name, "value": round(value, 3), "floor": None if floor is None else round(floor, 3),
            "ratio": None if not floor else round(value / floor, 2), "goal": goal, "ok": ok, "unit": unit, **extra}


# --- 1, 2, 5, 6 (no-op): a fake root whose config a running containerd 1.6 serves -------------------

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
    timed(args + INSTALL + ["--restart", "none"], env=env())
    daemon.restart()  # what --restart would do on a node; now CRI serves runsc and kata
    return root, daemon, args


def bench_noop(root_args, daemon, runs: int) -> list[dict]:
    pid = daemon.pid
    floor = lambda: timed([PY, "-c", DEPS])  # noqa: E731
    noop = lambda: timed(root_args + INSTALL + ["--restart", "none"], env=env())  # noqa: E731
    check = subprocess.run(root_args + INSTALL + ["--restart", "none"], capture_output=True, text=True, env=env())
    report = json.loads(check.stdout)
    assert report["changed"] is False and not report["restart"], report
    f1, s1 = interleaved(floor, noop, runs)
    doctor = lambda: timed(root_args + ["doctor"], ok=(0, 1, 2), env=env())  # noqa: E731
    f2, s2 = interleaved(floor, doctor, runs)
    restarts = 0 if daemon.pid == pid else 1
    return [
        row("no-op converge (install, CRI checks) vs import of deps", s1, f1, "<= 2x", s1 / f1 <= 2.0),
        row("doctor vs import of deps", s2, f2, "<= 2.5x", s2 / f2 <= 2.5),
        row(f"containerd restarts over {runs + 1} no-op converges (test daemon PID)", restarts, None, "0",
            restarts == 0, unit="restarts"),
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
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{address}/readyz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def bench_idle_agent(root_args, window: float) -> list[dict]:
    argv = root_args + ["agent", *INSTALL[1:], "--restart", "none", "--interval", "300", "--listen", "127.0.0.1:0"]
    proc = subprocess.Popen(argv, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        address = _listen_address(proc)
        deadline = time.monotonic() + 120
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
            peak = max(peak, p.memory_info().rss)
            time.sleep(0.5)
        cpu = (sum(p.cpu_times()[:4]) - cpu0) / (time.monotonic() - start) * 100
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    rss = peak / 1e6
    return [row(f"idle agent RSS over {window:.0f} s", rss, None, "< 50 MB", rss < 50, unit="MB"),
            row(f"idle agent CPU over {window:.0f} s", cpu, None, "< 0.5 %", cpu < 0.5, unit="%")]


# --- 3 and 6 (changed): the systemd node ----------------------------------------------------------

def bench_systemd(runs: int) -> list[dict]:
    from tests.support.systemd_node import SystemdNode

    node = SystemdNode().boot()
    try:
        node.wait_active()
        mirror = "/srv/nodeagent-mirror"
        shutil.copytree(default_mirror(), node.path(mirror))
        na = [PY, "-m", "nodeagent", "-o", "json"]
        node_env = {"NODEAGENT_LOG_FORMAT": "json", "NODEAGENT_MIRROR": mirror, "PYTHONPATH": str(REPO)}

        def run(args, check=True):
            proc = node.run(na + args, check=False, env=node_env, timeout=300)
            if check and proc.returncode != 0:
                raise SystemExit(f"{args} in the node exited {proc.returncode}: {proc.stderr[-2000:]}")
            return proc

        run(INSTALL + ["--restart", "systemd"])  # fills the artifact cache
        run(["uninstall", "--restart", "systemd"])
        rows = []
        for runtime in ("all", "kata"):
            install = ["install", "--runtime", runtime, "--skip-eligibility", "--restart", "systemd"]
            floors, changes, restarts, noop_restarts = [], [], [], []
            for _ in range(runs):
                node.systemctl("reset-failed", "containerd.service", check=False)  # start limit: 5 per 10 s
                start = time.perf_counter()
                node.run([PY, "-c", RESTART_FLOOR], env=node_env, timeout=120)
                floors.append(time.perf_counter() - start)
                node.systemctl("reset-failed", "containerd.service", check=False)
                pid = node.main_pid()
                start = time.perf_counter()
                report = json.loads(run(install).stdout)
                changes.append(time.perf_counter() - start)
                assert report["changed"] and report["restart"], report
                restarts.append(int(node.main_pid() != pid))
                pid = node.main_pid()
                again = json.loads(run(install).stdout)
                assert again["changed"] is False, again
                noop_restarts.append(int(node.main_pid() != pid))
                node.systemctl("reset-failed", "containerd.service", check=False)
                run(["uninstall", "--runtime", runtime, "--restart", "systemd"])
            f, s = statistics.median(floors), statistics.median(changes)
            what = "gVisor+Kata (gVisor's .tar.bz2 is unpacked again)" if runtime == "all" else "Kata only (.tar.zst)"
            rows.append(row(f"changing converge, {what}, cached, --restart systemd vs deps + systemctl restart "
                            "until CRI ok", s, f, "<= 1.5x", s / f <= 1.5))
            rows.append(row(f"containerd restarts per changing converge ({runtime}; MainPID)", statistics.mean(restarts),
                            None, "1", all(r == 1 for r in restarts), unit="restarts"))
            rows.append(row(f"containerd restarts per no-op converge ({runtime}; MainPID)",
                            statistics.mean(noop_restarts), None, "0", not any(noop_restarts), unit="restarts"))
        return rows
    finally:
        node.shutdown()


# --- 4: bench/download.py ----------------------------------------------------------------------------

def bench_download(runs: int) -> list[dict]:
    out = Path(tempfile.mkstemp(prefix="na-bench-dl-", suffix=".json")[1])
    try:
        subprocess.run([PY, str(REPO / "bench/download.py"), "--runs", str(runs), "--json", str(out)],
                       capture_output=True, text=True, timeout=900)
        r = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    return [
        row(f"download+verify {r['size_mib']} MiB vs curl | sha512sum", r["nodeagent_fetch_only_s"],
            r["curl_sha512sum_s"], "<= 1.25x", r["ratio"] <= 1.25,
            whole_process_s=r["nodeagent_process_s"], whole_process_ratio=r["process_ratio"]),
        row("download peak RSS", r["peak_rss_mb"], None, "< 80 MB", r["peak_rss_mb"] < 80, unit="MB"),
    ]


def print_table(rows: list[dict], header: str) -> None:
    print(header)
    width = max(len(r["name"]) for r in rows)
    print(f"{'measurement'.ljust(width)}  {'value':>10}  {'floor':>8}  {'ratio':>7}  {'goal':>8}  result")
    for r in rows:
        value = f"{r['value']:.3f} {r['unit']}" if r["unit"] == "s" else f"{r['value']:g} {r['unit']}"
        floor = "" if r["floor"] is None else f"{r['floor']:.3f} s"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        print(f"{r['name'].ljust(width)}  {value:>10}  {floor:>8}  {ratio:>7}  {r['goal']:>8}  "
              f"{'ok' if r['ok'] else 'MISSED'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs, 15 s agent window (~3 min)")
    ap.add_argument("--json", default=str(REPO / "bench/results/latest.json"))
    ap.add_argument("--skip", action="append", default=[], choices=["noop", "agent", "systemd", "download"])
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/run.py needs root (containerd test daemons, systemd in namespaces)", file=sys.stderr)
        return 2
    runs, window = (3, 15.0) if args.quick else (5, 60.0)
    started = time.monotonic()
    rows: list[dict] = []
    base = Path(tempfile.mkdtemp(prefix="na-bench-"))
    daemon = None
    try:
        if "noop" not in args.skip or "agent" not in args.skip:
            root, daemon, root_args = converged_root(base)
            if "noop" not in args.skip:
                rows += bench_noop(root_args, daemon, runs)
            if "agent" not in args.skip:
                rows += bench_idle_agent(root_args, window)
            daemon.cleanup()
            daemon = None
        if "systemd" not in args.skip:
            rows += bench_systemd(3)
        if "download" not in args.skip:
            rows += bench_download(3 if args.quick else 5)
    finally:
        if daemon is not None:
            daemon.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    load = os.getloadavg()[0]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"nodeagent bench {when}, {'quick' if args.quick else 'full'}, medians of {runs} interleaved runs "
              f"(systemd node: 3), {os.cpu_count()} vCPU, load avg {load:.1f}, took {time.monotonic() - started:.0f} s")
    print_table(rows, header)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"date": when, "quick": args.quick, "load_avg": load, "rows": rows},
                                          indent=2) + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
