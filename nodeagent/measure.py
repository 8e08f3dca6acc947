"""What a sandbox runtime costs per pod, measured: memory (RSS, PSS) and CPU of its own processes.

A RuntimeClass's `overhead.podFixed` is what the scheduler adds to every pod of that class; too
low and pods get OOM-killed or nodes overcommitted (kata-deploy raised QEMU's to 320Mi by hand
after OOMs), too high and nodes run half empty. So we measure it: N sandboxes running a workload
that does nothing, the runtime's processes of each one sampled with psutil.

The numbers and the recommendation go into a JSON report (`verify --measure -o json` or `--out`)
that `runtimeclasses --overhead-from FILE` reads back (`load_recommendations`).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import psutil

from nodeagent.errors import NodeagentError

MI = 1 << 20
MARGIN = 0.2  # on top of the worst sandbox seen: the node is not always as quiet as when we measured
CPU_STEP = 10  # millicores the CPU recommendation is rounded up to (and its floor)
DEFAULT_SANDBOXES = 3
MAX_SANDBOXES = 50
DEFAULT_WINDOW = 2.0  # seconds of idle CPU sampling
REPORT_KEY = "measure"


class MeasureError(NodeagentError):
    default_hint = "run `nodeagent verify` to see whether the runtime can start a sandbox here"


class OverheadFileError(NodeagentError):
    default_hint = "write the file with `nodeagent verify --measure -o json` (or --out FILE) and pass it unchanged"


@dataclass
class SandboxCost:
    """One sandbox: the runtime's processes and what they cost."""

    processes: list[dict[str, Any]] = field(default_factory=list)  # name, pid, rss, pss (bytes)
    cpu_millicores: float = 0.0  # while idle, over the sampling window
    startup_cpu_ms: float = 0.0  # CPU its processes used from their start to the window's start

    @property
    def rss(self) -> int:
        return sum(p["rss"] for p in self.processes)

    @property
    def pss(self) -> int:
        return sum(p["pss"] for p in self.processes)

    def as_dict(self) -> dict[str, Any]:
        return {"rss": self.rss, "pss": self.pss, "cpu_millicores": round(self.cpu_millicores, 2),
                "startup_cpu_ms": round(self.startup_cpu_ms, 1), "processes": self.processes}


def descendants(pid: int) -> list[psutil.Process]:
    """Every live process below `pid` (not `pid` itself); [] when it is gone."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _label(proc: psutil.Process, depth: int = 0) -> str:
    """argv[0]'s name; a process without argv (gVisor's stubs, which hold the workload's address
    spaces for the Sentry) is named after its parent."""
    try:
        argv = proc.cmdline()
        if argv and argv[0]:
            return os.path.basename(argv[0])
        parent = proc.parent()
        return f"stub of {_label(parent, depth + 1)}" if parent and depth < 3 else proc.name()
    except psutil.Error:
        return "gone"


def _cpu_seconds(proc: psutil.Process) -> float | None:
    try:
        times = proc.cpu_times()
        return times.user + times.system
    except psutil.Error:
        return None


def sample(groups: list[list[psutil.Process]], window: float = DEFAULT_WINDOW) -> list[SandboxCost]:
    """Cost of each group of processes (one group per sandbox), all sampled over the same window.

    CPU is the user+system time the group used during `window` seconds; memory is read at the
    window's end (RSS, and PSS where the kernel gives smaps_rollup: root, or the same user)."""
    before = [{p.pid: _cpu_seconds(p) for p in group} for group in groups]
    time.sleep(window)
    costs = []
    for group, start in zip(groups, before):
        cost = SandboxCost(startup_cpu_ms=sum(v for v in start.values() if v) * 1000)
        used = 0.0
        for proc in group:
            now = _cpu_seconds(proc)
            if now is None:
                continue  # ended during the window: it no longer costs anything
            used += now - (start.get(proc.pid) or 0.0)
            try:
                mem = proc.memory_full_info()
                pss = getattr(mem, "pss", mem.rss)
            except psutil.AccessDenied:
                mem, pss = proc.memory_info(), None
            except psutil.Error:
                continue
            cost.processes.append({"name": _label(proc), "pid": proc.pid, "rss": mem.rss,
                                   "pss": mem.rss if pss is None else pss})
        cost.cpu_millicores = used / window * 1000
        costs.append(cost)
    return costs


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {"min": ordered[0], "median": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


def recommend(costs: list[SandboxCost], window: float) -> tuple[dict[str, str], str]:
    """`overhead.podFixed` for these sandboxes, and how it was reached (in words)."""
    memory = math.ceil(max(c.rss for c in costs) * (1 + MARGIN) / MI)
    cpu = max(CPU_STEP, math.ceil(max(c.cpu_millicores for c in costs) * (1 + MARGIN) / CPU_STEP) * CPU_STEP)
    method = (f"memory: the largest RSS of one sandbox's runtime processes over {len(costs)} sandboxes "
              f"(shared pages counted in full: any one pod may be the one charged for them) + {MARGIN:.0%}, "
              f"rounded up to Mi; cpu: the largest idle CPU use of those processes over a {window:g}s window "
              f"+ {MARGIN:.0%}, rounded up to {CPU_STEP}m (at least {CPU_STEP}m). The workload does nothing "
              "(sleep), so what is measured is the runtime's own cost; a busy workload adds more "
              "(gVisor's Sentry works for every syscall), which its own requests must cover")
    return {"memory": f"{memory}Mi", "cpu": f"{cpu}m"}, method


@dataclass
class RuntimeMeasure:
    """`measure.<runtime>` of the report."""

    runtime: str
    method: str  # how the sandboxes were started: "runsc-do" | "cri"
    sandboxes: int = 0
    skipped: bool = False
    reason: str | None = None
    costs: list[SandboxCost] = field(default_factory=list)
    window: float = DEFAULT_WINDOW
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"runtime": self.runtime, "method": self.method, "sandboxes": self.sandboxes,
                                "skipped": self.skipped, "reason": self.reason, **self.detail}
        if self.costs:
            recommended, how = recommend(self.costs, self.window)
            data.update(
                window_seconds=self.window,
                per_sandbox=[c.as_dict() for c in self.costs],
                stats={"rss": _stats([c.rss for c in self.costs]), "pss": _stats([c.pss for c in self.costs]),
                       "cpu_millicores": _stats([round(c.cpu_millicores, 2) for c in self.costs])},
                recommended=recommended,
                recommendation_method=how,
            )
        return data


def render(m: RuntimeMeasure) -> list[str]:
    if not m.costs:
        return [f"{m.runtime:<7} measure skipped: {m.reason}"]
    data = m.as_dict()
    rss, pss, cpu = data["stats"]["rss"], data["stats"]["pss"], data["stats"]["cpu_millicores"]
    rec = data["recommended"]
    return [
        f"{m.runtime:<7} measured {m.sandboxes} sandboxes via {m.method}: runtime processes per sandbox "
        f"RSS {rss['min'] / MI:.1f}-{rss['max'] / MI:.1f} MiB, PSS {pss['min'] / MI:.1f}-{pss['max'] / MI:.1f} MiB, "
        f"idle CPU {cpu['min']:.1f}-{cpu['max']:.1f}m",
        f"{'':<7} recommended overhead.podFixed: memory {rec['memory']}, cpu {rec['cpu']}",
        f"{'':<7} method: {data['recommendation_method']}",
    ]


def host_conditions() -> dict[str, Any]:
    """What else ran while we measured: numbers from a busy node are numbers from a busy node."""
    return {"load_average_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


# --- reading a report back (runtimeclasses --overhead-from) ------------------------------------

_QUANTITY_MEMORY = r"[1-9][0-9]{0,6}(Ki|Mi|Gi)"
_QUANTITY_CPU = r"[1-9][0-9]{0,6}m"


def load_recommendations(path: str, runtimes: Iterable[str]) -> dict[str, dict[str, str]]:
    """runtime -> {"memory", "cpu"} from a `verify --measure` JSON report, for each of `runtimes`
    the report measured. Anything else in the file is refused, never guessed at."""
    import re

    try:
        with open(path, "rb") as fh:
            raw = fh.read((1 << 22) + 1)
    except OSError as exc:
        raise OverheadFileError(f"cannot read the overhead file {path}: {exc.strerror or exc}") from None
    if len(raw) > 1 << 22:
        raise OverheadFileError(f"the overhead file {path} is larger than 4 MiB: not a measure report")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise OverheadFileError(f"the overhead file {path} is not JSON: {exc}") from None
    measured = data.get(REPORT_KEY) if isinstance(data, dict) else None
    if not isinstance(measured, dict):
        raise OverheadFileError(f"the overhead file {path} has no {REPORT_KEY!r} object: not a `verify --measure` report")
    found: dict[str, dict[str, str]] = {}
    for runtime in runtimes:
        entry = measured.get(runtime)
        if not isinstance(entry, dict) or entry.get("skipped") or "recommended" not in entry:
            continue
        rec = entry["recommended"]
        memory, cpu = (rec.get("memory"), rec.get("cpu")) if isinstance(rec, dict) else (None, None)
        if not (isinstance(memory, str) and re.fullmatch(_QUANTITY_MEMORY, memory)
                and isinstance(cpu, str) and re.fullmatch(_QUANTITY_CPU, cpu)):
            raise OverheadFileError(f"the overhead file {path} recommends {rec!r} for {runtime}: "
                                    "expected memory like '64Mi' and cpu like '100m'")
        found[runtime] = {"memory": memory, "cpu": cpu}
    if not found:
        raise OverheadFileError(f"the overhead file {path} holds no measured recommendation for "
                                f"{', '.join(runtimes) or 'any runtime'}",
                                "measure the runtime on a node that runs it: nodeagent verify --measure --runtime R -o json")
    return found
