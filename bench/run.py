#!/usr/bin/env python3
"""All of nodeagent's benchmarks in one run: whole processes, each against a floor measured side by side.

    python3 bench/run.py [--quick | --smoke] [--json FILE] [--skip ROW_GROUP]

Prints a table (value, floor, ratio, goal, ok/MISSED) and writes JSON (bench/results/latest.json)
with the date, the machine and its load. Every row times whole processes as an operator starts
them (interpreter start and imports included), interleaved with its floor (floor, subject, floor,
subject, ...) so both see the same load, and reports medians. Nothing on the real host is touched:
fake roots with containerd 1.6 test daemons, systemd booted in namespaces, loopback mirrors.

  (a) no-op converge on a converged root            vs python -c "import tomlkit, requests, structlog, psutil"  <= 1.5x
  (b) doctor on a live systemd node                 vs the same imports, in the node                         <= 2.0x
  (c) fresh install, 256 MiB gVisor, http mirror    vs curl -s URL | sha512sum                              <= 1.15x
      and its peak RSS                                                                                       < 80 MB
  (d) fresh install, Kata stand-in (kata_standin.py) vs the imports + tar --zstd -xf of the same archive    <= 1.25x
  (e) config-only changing converge, systemd node   vs imports + systemctl restart containerd until CRI ok   <= 1.3x
  (f) idle `nodeagent agent` after converging       RSS < 40 MB, CPU < 0.2 % over 60 s (--quick: 15 s)
  plus containerd restarts per changing (1) and no-op (0) converge.

--quick: 3 runs per row (5 otherwise), the node's rows 3. --smoke (CI): 1 run, tiny artifacts,
a 2 s agent window; it only shows that every row runs and the JSON is complete.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO  # noqa: E402
from bench.rows_install import bench_gvisor_install, bench_kata_install, template_root  # noqa: E402
from bench.rows_node import bench_node  # noqa: E402
from bench.rows_root import bench_idle_agent, bench_noop, converged_root  # noqa: E402

GROUPS = ("root", "agent", "node", "gvisor", "kata")
ROW_IDS = ("noop", "restarts_noop_daemon", "agent_rss", "agent_cpu", "doctor", "config_converge",
           "restarts_changing", "restarts_noop", "gvisor_install", "gvisor_install_rss", "kata_install")


def profile(args) -> dict:
    if args.smoke:
        return {"runs": 1, "node_runs": 1, "window": 2.0, "gvisor_mib": 8, "kata_scale": 0.01, "mode": "smoke"}
    if args.quick:
        return {"runs": 3, "node_runs": 3, "window": 15.0, "gvisor_mib": 256, "kata_scale": 1.0, "mode": "quick"}
    return {"runs": 5, "node_runs": 3, "window": 60.0, "gvisor_mib": 256, "kata_scale": 1.0, "mode": "full"}


def run_rows(p: dict, skip: list[str], base: Path) -> list[dict]:
    rows: list[dict] = []
    if "root" not in skip or "agent" not in skip:
        root, daemon, root_args = converged_root(base)
        try:
            if "root" not in skip:
                rows += bench_noop(root_args, daemon, p["runs"])
            if "agent" not in skip:
                rows += bench_idle_agent(root_args, p["window"])
        finally:
            daemon.cleanup()
    if "node" not in skip:
        rows += bench_node(p["node_runs"])
    if "gvisor" not in skip or "kata" not in skip:
        template = template_root(base)
        if "gvisor" not in skip:
            rows += bench_gvisor_install(base, template, p["runs"], p["gvisor_mib"])
        if "kata" not in skip:
            rows += bench_kata_install(base, template, p["runs"], p["kata_scale"])
    return rows


def print_table(rows: list[dict], header: str) -> None:
    print(header)
    width = max(len(r["name"]) for r in rows)
    print(f"{'measurement'.ljust(width)}  {'value':>11}  {'floor':>8}  {'ratio':>7}  {'goal':>8}  result")
    for r in rows:
        value = f"{r['value']:.3f} {r['unit']}" if r["unit"] == "s" else f"{r['value']:g} {r['unit']}"
        floor = "" if r["floor"] is None else f"{r['floor']:.3f} s"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        print(f"{r['name'].ljust(width)}  {value:>11}  {floor:>8}  {ratio:>7}  {r['goal']:>8}  "
              f"{'ok' if r['ok'] else 'MISSED'}")


def machine() -> dict:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpus": os.cpu_count(), "mem_gb": round(mem / 1e9, 1), "kernel": platform.release(),
            "python": platform.python_version(), "host": platform.node()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="3 runs per row, 15 s agent window")
    mode.add_argument("--smoke", action="store_true", help="1 run, tiny artifacts: checks the bench runs (CI)")
    ap.add_argument("--json", default=str(REPO / "bench/results/latest.json"))
    ap.add_argument("--skip", action="append", default=[], choices=GROUPS)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/run.py needs root (containerd test daemons, systemd in namespaces)", file=sys.stderr)
        return 2
    p = profile(args)
    started = time.monotonic()
    load_before = os.getloadavg()
    base = Path(tempfile.mkdtemp(prefix="na-bench-"))
    try:
        rows = run_rows(p, args.skip, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    load = os.getloadavg()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    m = machine()
    header = (f"nodeagent bench {when}, {p['mode']}, medians of {p['runs']} interleaved runs (node: {p['node_runs']}), "
              f"{m['cpus']} vCPU, load avg {load_before[0]:.1f} before / {load[0]:.1f} after, "
              f"took {time.monotonic() - started:.0f} s")
    print_table(rows, header)
    result = {"date": when, "mode": p["mode"], "quick": p["mode"] == "quick", "machine": m,
              "load_avg": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load]},
              "runs": p["runs"], "node_runs": p["node_runs"], "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
