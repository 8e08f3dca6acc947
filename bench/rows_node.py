"""Rows on a live node: this machine's systemd booted in namespaces with Debian's containerd.service
running (tests/support/systemd_node.py), the suite's directory mirror copied in.

(b) `doctor` (real `containerd config dump`, real CRI) vs the import floor, both inside the node.
(e) a config-only changing converge (artifacts already installed; only config.toml differs) with
    `--restart systemd` vs the imports + `systemctl restart containerd` + CRI Status polled every
    20 ms until ok, both inside the node.
Plus containerd restarts per changing / no-op converge, from the unit's MainPID.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time

from bench.common import IMPORTS, PY, REPO, SOCKET, interleaved, ratio_row, row
from tests.support.mirror import default_mirror

INSTALL = ["install", "--runtime", "all", "--skip-eligibility", "--restart", "systemd"]
RESTART_FLOOR = f"""
{IMPORTS}
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


class Node:
    """The booted node and how the bench runs nodeagent in it."""

    def __init__(self, node):
        self.node = node
        self.mirror = "/srv/nodeagent-mirror"
        shutil.copytree(default_mirror(), node.path(self.mirror))
        self.env = {"NODEAGENT_LOG_FORMAT": "json", "NODEAGENT_MIRROR": self.mirror, "PYTHONPATH": str(REPO)}

    def timed(self, argv: list[str], ok=(0,)) -> float:
        start = time.perf_counter()
        proc = self.node.run(argv, check=False, env=self.env, timeout=300)
        took = time.perf_counter() - start
        if proc.returncode not in ok:
            raise SystemExit(f"{argv} in the node exited {proc.returncode}: {proc.stderr[-3000:]}")
        return took

    def nodeagent(self, args: list[str]) -> dict:
        proc = self.node.run([PY, "-m", "nodeagent", "-o", "json", *args], check=False, env=self.env, timeout=300)
        if proc.returncode != 0:
            raise SystemExit(f"{args} in the node exited {proc.returncode}: {proc.stderr[-3000:]}")
        return json.loads(proc.stdout)

    def reset_start_limit(self) -> None:
        self.node.systemctl("reset-failed", "containerd.service", check=False)  # at most 5 starts per 10 s


def bench_node(runs: int) -> list[dict]:
    from tests.support.systemd_node import SystemdNode

    booted = SystemdNode().boot()
    try:
        booted.wait_active()
        node = Node(booted)
        config = booted.path("/etc/containerd/config.toml")
        original = config.read_bytes()
        node.nodeagent(INSTALL)  # artifacts installed and cached, config converged, containerd restarted
        rows = _doctor(node, runs)
        rows += _config_converge(node, config, original, runs)
        return rows
    finally:
        booted.shutdown()


def _doctor(node: Node, runs: int) -> list[dict]:
    seen = node.node.run([PY, "-m", "nodeagent", "-o", "json", "doctor"], check=False, env=node.env, timeout=300)
    report = json.loads(seen.stdout)
    checks = {c["id"]: c["status"] for c in report["checks"]}
    floor = lambda: node.timed([PY, "-c", IMPORTS])  # noqa: E731
    doctor = lambda: node.timed([PY, "-m", "nodeagent", "-o", "json", "doctor"], ok=(0, 1, 2))  # noqa: E731
    f, s = interleaved(floor, doctor, runs)
    return [ratio_row("doctor", "doctor on a live systemd node (containerd running: config dump, CRI) vs imports",
                      s, f, 2.0, doctor_status=report["status"], checks=checks)]


def _config_converge(node: Node, config, original: bytes, runs: int) -> list[dict]:
    floors, changes, restarts, noop_restarts = [], [], [], []
    for _ in range(runs):
        node.reset_start_limit()
        floors.append(node.timed([PY, "-c", RESTART_FLOOR]))
        node.reset_start_limit()
        config.write_bytes(original)  # only the config differs; every artifact is installed and linked
        pid = node.node.main_pid()
        start = time.perf_counter()
        report = node.nodeagent(INSTALL)
        changes.append(time.perf_counter() - start)
        assert report["changed"] and report["restart"], report
        assert all(a["action"] == "none" for a in report["artifacts"]), report["artifacts"]
        restarts.append(int(node.node.main_pid() != pid))
        pid = node.node.main_pid()
        assert node.nodeagent(INSTALL)["changed"] is False
        noop_restarts.append(int(node.node.main_pid() != pid))
    f, s = statistics.median(floors), statistics.median(changes)
    return [
        ratio_row("config_converge", "config-only changing converge on the systemd node (artifacts installed), "
                  "--restart systemd, vs imports + systemctl restart until CRI ok", s, f, 1.3),
        row("restarts_changing", "containerd restarts per changing converge (MainPID)", statistics.mean(restarts),
            None, "1", all(r == 1 for r in restarts), unit="restarts"),
        row("restarts_noop", "containerd restarts per no-op converge (MainPID)", statistics.mean(noop_restarts),
            None, "0", not any(noop_restarts), unit="restarts"),
    ]
