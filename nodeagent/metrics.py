"""Agent counters and gauges, rendered in Prometheus' text exposition format."""

from __future__ import annotations

import threading

_HELP = {
    "nodeagent_converges_total": ("counter", "Converge attempts."),
    "nodeagent_converge_failures_total": ("counter", "Converge attempts that failed."),
    "nodeagent_installs_total": ("counter", "Converges that changed the node (artifacts or config)."),
    "nodeagent_drift_repairs_total": ("counter", "Changes made after the node had already converged (drift)."),
    "nodeagent_containerd_restarts_total": ("counter", "containerd restarts nodeagent performed."),
    "nodeagent_rollbacks_total": ("counter", "Rollbacks to the previous containerd config."),
    "nodeagent_last_converge_duration_seconds": ("gauge", "Duration of the last converge."),
    "nodeagent_last_converge_timestamp_seconds": ("gauge", "Unix time the last converge ended."),
    "nodeagent_ready": ("gauge", "1 when the last converge succeeded."),
    "nodeagent_rollout_halted": ("gauge", "1 while the fleet's rollout of this desired state is halted (too many nodes failed)."),
}


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, float] = {name: 0.0 for name in _HELP}

    def inc(self, name: str, by: float = 1.0) -> None:
        with self._lock:
            self._values[name] += by

    def set(self, name: str, value: float) -> None:
        with self._lock:
            self._values[name] = float(value)

    def get(self, name: str) -> float:
        with self._lock:
            return self._values[name]

    def render(self) -> str:
        with self._lock:
            values = dict(self._values)
        lines = []
        for name, (kind, help_text) in _HELP.items():
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            value = values[name]
            lines.append(f"{name} {int(value) if value.is_integer() else repr(value)}")
        return "\n".join(lines) + "\n"
