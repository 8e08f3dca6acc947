"""`nodeagent verify --measure [N] [--out FILE]`: the per-sandbox cost of each verified runtime.

A runtime is measured only once `verify` proved its sandbox real; the others are listed as
skipped with the reason (for a runtime this host cannot run, detection's reasons).
"""

from __future__ import annotations

import json
from typing import Any

from nodeagent import measure
from nodeagent.errors import NodeagentError, UsageError
from nodeagent.host import HostRoot


def check_count(count: int) -> None:
    """Refuse a sandbox count that measures nothing or would swamp the node (before starting any)."""
    if not 1 <= count <= measure.MAX_SANDBOXES:
        raise UsageError(f"--measure {count}: the number of sandboxes must be 1 to {measure.MAX_SANDBOXES}",
                         f"e.g. --measure {measure.DEFAULT_SANDBOXES}")


def _why_not(host: HostRoot, settings, check) -> str:
    reason = check.reason or "not verified"
    try:
        from nodeagent.detect import detect_host

        verdict = detect_host(host, settings).verdict(check.runtime)
    except NodeagentError:
        verdict = None
    if verdict is not None and not verdict.eligible:
        reason += f"; {check.runtime} cannot run on this host: " + "; ".join(verdict.reasons)
    return reason


def _measure_one(host: HostRoot, settings, check, count: int) -> measure.RuntimeMeasure:
    from nodeagent.measure_launch import measure_cri, measure_runsc_do, skipped

    if check.skipped or not check.ok:
        return skipped(check.runtime, check.method, _why_not(host, settings, check))
    timeout = settings.health_timeout
    if check.method == "runsc-do":
        from pathlib import Path

        return measure_runsc_do(Path(check.detail["runsc"]), count, platform=settings.gvisor_platform, timeout=timeout)
    return measure_cri(check.runtime, check.detail["handler"], check.detail["socket"], count, timeout=timeout)


def _write(path: str, data: dict[str, Any]) -> None:
    from nodeagent.fsutil import atomic_write

    try:
        atomic_write(path, (json.dumps(data, indent=2) + "\n").encode())
    except OSError as exc:
        raise NodeagentError(f"cannot write {path}: {exc.strerror or exc}", "pass --out a writable path") from None


def measure_checked(host: HostRoot, settings, checks: list, count: int, data: dict[str, Any], out: str | None) -> str:
    """Measure every verified runtime; fill data["measure"] (and `out`); return the text lines."""
    results = [_measure_one(host, settings, c, count) for c in checks]
    data[measure.REPORT_KEY] = {m.runtime: m.as_dict() for m in results}
    data["measure_host"] = measure.host_conditions()
    if out:
        _write(out, data)
    lines = [line for m in results for line in measure.render(m)]
    lines.append(f"measured on a host with load {data['measure_host']['load_average_1m']} "
                 f"on {data['measure_host']['cpus']} CPUs" + (f"; report written to {out}" if out else ""))
    return "\n".join(lines)
