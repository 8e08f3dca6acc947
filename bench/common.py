"""What every bench row shares: whole-process timing, interleaving, medians, and the row format."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
# the import floor: the project's own runtime dependencies, with the project's python
IMPORTS = "import tomlkit, requests, structlog, psutil"
SOCKET = "/run/containerd/containerd.sock"


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("NODEAGENT_")}
    e.update(NODEAGENT_LOG_FORMAT="json", PYTHONPATH=str(REPO), NO_PROXY="127.0.0.1,localhost", **extra)
    return e


def peak_rss_of(argv: list[str], ok=(0,), **kw) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of exactly this process, from wait4's rusage of its pid."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, **kw)
        _, status, usage = os.wait4(proc.pid, 0)
        took = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in ok:
            err.seek(0)
            raise SystemExit(f"{argv} exited {proc.returncode}:\n{err.read().decode(errors='replace')[-3000:]}")
    return took, usage.ru_maxrss / 1024


def timed(argv: list[str], ok=(0,), timeout: float = 600, **kw) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    took = time.perf_counter() - start
    if proc.returncode not in ok:
        raise SystemExit(f"{argv} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return took


def interleaved(floor, subject, runs: int, between=None) -> tuple[float, float]:
    """floor, subject, floor, subject, ...: both see the same load; returns both medians."""
    floors, subjects = [], []
    for _ in range(runs):
        if between:
            between()
        floors.append(floor())
        if between:
            between()
        subjects.append(subject())
    return statistics.median(floors), statistics.median(subjects)


def row(rid: str, name: str, value: float, floor: float | None, goal: str, ok: bool, unit: str = "s",
        **extra) -> dict:
    return {"id": rid, "name": name, "value": round(value, 3), "floor": None if floor is None else round(floor, 3),
            "ratio": None if not floor else round(value / floor, 2), "goal": goal, "ok": bool(ok), "unit": unit,
            **extra}


def ratio_row(rid: str, name: str, value: float, floor: float, limit: float, **extra) -> dict:
    return row(rid, name, value, floor, f"<= {limit:g}x", value / floor <= limit, **extra)
