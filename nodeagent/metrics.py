"""The agent's Prometheus metrics: standard names and units, process metrics, converge durations.

Exposed through `prometheus_client` with a registry of our own (not the library's global one,
which would also carry its platform and GC collectors). Names follow Prometheus' conventions:
base units (`_seconds`, `_bytes`), counters end in `_total`, `process_*` from the library's
ProcessCollector (/proc/self: the resident agent only, not a round's short-lived child).

Memory (issue 16, measured 2026-12-05 on the 2-vCPU bench VM, load ~8): `bench/run.py`'s idle
agent RSS went from 32.1 MB (our own exposition) to 34.3 MB with prometheus_client, also while
scraped every 2 s; the goal is < 40 MB. It is imported when the Agent is built, not at module
import: a round's child imports nodeagent.agent but never renders metrics.

To add a metric, add a line to COUNTERS or GAUGES (name -> help text) and call `inc`/`set`.
"""

from __future__ import annotations

import threading
from typing import Any

from nodeagent import __version__

# outcome label of nodeagent_converges_total; every value is exported from the start (at 0), so
# rate() and alerts see a series before the first failure
OUTCOMES = ("unchanged", "changed", "failed", "rolled_back")
# a no-op converge takes ~0.25 s, a fresh Kata install tens of seconds, a wait for a restart slot minutes
CONVERGE_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

COUNTERS = {
    "nodeagent_converge_failures_total": "Converges that failed (outcome failed or rolled_back).",
    "nodeagent_installs_total": "Converges that changed the node (artifacts or config).",
    "nodeagent_drift_repairs_total": "Changes made after the node had already converged (drift).",
    "nodeagent_containerd_restarts_total": "containerd restarts nodeagent performed.",
    "nodeagent_rollbacks_total": "Rollbacks to the previous containerd config.",
}
GAUGES = {
    "nodeagent_ready": "1 when the last converge succeeded, else 0.",
    "nodeagent_last_converge_duration_seconds": "Duration of the last converge.",
    "nodeagent_last_converge_timestamp_seconds": "Unix time the last converge ended.",
    "nodeagent_rollout_halted": "1 while the fleet's rollout of this desired state is halted (too many nodes failed).",
}
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The agent's metrics; thread-safe (prometheus_client locks each value)."""

    def __init__(self) -> None:
        import prometheus_client as prom

        prom.disable_created_metrics()  # no `_created` series next to every counter: noise on a graph
        self.registry = prom.CollectorRegistry()
        prom.ProcessCollector(registry=self.registry)
        self._metrics: dict[str, Any] = {}
        for name, help_text in COUNTERS.items():
            self._metrics[name] = prom.Counter(name, help_text, registry=self.registry)
        for name, help_text in GAUGES.items():
            self._metrics[name] = prom.Gauge(name, help_text, registry=self.registry)
        self._converges = prom.Counter("nodeagent_converges_total", "Converges by outcome.", ["outcome"],
                                       registry=self.registry)
        for outcome in OUTCOMES:
            self._converges.labels(outcome)
        self._duration = prom.Histogram("nodeagent_converge_duration_seconds", "How long converges take.",
                                        buckets=CONVERGE_BUCKETS, registry=self.registry)
        prom.Gauge("nodeagent_build_info", "Always 1; the version label is nodeagent's version.", ["version"],
                   registry=self.registry).labels(__version__).set(1)
        self._render = prom.generate_latest
        self._lock = threading.Lock()  # a scrape sees a converge counted in both or in neither

    def inc(self, name: str, by: float = 1.0) -> None:
        self._metrics[name].inc(by)

    def set(self, name: str, value: float) -> None:
        self._metrics[name].set(value)

    def get(self, name: str, **labels: str) -> float:
        """A sample's current value (tests and logs); 0 for a series that does not exist."""
        return self.registry.get_sample_value(name, labels or None) or 0.0

    def converge_finished(self, outcome: str, seconds: float) -> None:
        """Count one converge by outcome and record its duration."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown converge outcome {outcome!r}")
        with self._lock:
            self._converges.labels(outcome).inc()
            self._duration.observe(seconds)

    def render(self) -> str:
        with self._lock:
            return self._render(self.registry).decode()
