"""`metrics.Metrics`: what a scrape shows, read with Prometheus' own text parser (tests/support/prom.py).
The agent's /metrics endpoint is served for real in tests/integration/test_agent_endpoints.py."""

from __future__ import annotations

import os

import pytest

from nodeagent import __version__
from nodeagent.metrics import CONVERGE_BUCKETS, COUNTERS, GAUGES, OUTCOMES, Metrics
from tests.support import prom


def scrape(m: Metrics) -> dict:
    return prom.parse(m.render())


def test_a_fresh_agent_exports_every_series_at_zero():
    m = Metrics()
    samples = scrape(m)
    for outcome in OUTCOMES:
        assert prom.value(samples, "nodeagent_converges_total", outcome=outcome) == 0.0
    for name in (*COUNTERS, *GAUGES):
        assert prom.value(samples, name) == 0.0, name
    assert prom.value(samples, "nodeagent_build_info", version=__version__) == 1.0
    assert prom.value(samples, "nodeagent_converge_duration_seconds_count") == 0.0


def test_names_follow_prometheus_conventions():
    text = Metrics().render()
    types = prom.types(text)
    assert all(types[name.removesuffix("_total")] == "counter" for name in COUNTERS)
    assert all(types[name] == "gauge" for name in GAUGES)
    assert types["nodeagent_converge_duration_seconds"] == "histogram"
    assert "_created" not in text  # no creation-time series beside every counter
    assert not [n for n in prom.parse(text) if n.startswith(("python_gc", "python_info"))]  # own registry only


def test_process_metrics_describe_this_process():
    samples = scrape(Metrics())
    assert prom.value(samples, "process_resident_memory_bytes") > 1 << 20
    assert prom.value(samples, "process_open_fds") == pytest.approx(len(os.listdir("/proc/self/fd")), abs=5)


def test_converges_are_counted_by_outcome_with_their_duration():
    m = Metrics()
    m.converge_finished("changed", 3.0)
    m.converge_finished("unchanged", 0.3)
    m.converge_finished("changed", 700.0)
    samples = scrape(m)
    assert prom.value(samples, "nodeagent_converges_total", outcome="changed") == 2.0
    assert prom.value(samples, "nodeagent_converges_total", outcome="unchanged") == 1.0
    assert prom.value(samples, "nodeagent_converges_total", outcome="failed") == 0.0
    assert prom.value(samples, "nodeagent_converge_duration_seconds_count") == 3.0
    assert prom.value(samples, "nodeagent_converge_duration_seconds_sum") == pytest.approx(703.3)
    buckets = {float(s.labels["le"]): s.value for s in samples["nodeagent_converge_duration_seconds_bucket"]}
    assert sorted(b for b in buckets if b != float("inf")) == list(CONVERGE_BUCKETS)
    assert (buckets[0.25], buckets[0.5], buckets[5.0], buckets[600.0], buckets[float("inf")]) == (0, 1, 2, 2, 3)
    assert m.get("nodeagent_converges_total", outcome="changed") == 2.0


def test_an_unknown_outcome_is_refused_and_counts_nothing():
    m = Metrics()
    with pytest.raises(ValueError, match="unknown converge outcome 'ok'"):
        m.converge_finished("ok", 1.0)
    assert m.get("nodeagent_converge_duration_seconds_count") == 0.0
    assert m.get("nodeagent_converges_total", outcome="ok") == 0.0


def test_counters_and_gauges():
    m = Metrics()
    m.inc("nodeagent_containerd_restarts_total")
    m.inc("nodeagent_containerd_restarts_total", 2)
    m.set("nodeagent_ready", 1)
    m.set("nodeagent_last_converge_duration_seconds", 0.25)
    samples = scrape(m)
    assert prom.value(samples, "nodeagent_containerd_restarts_total") == 3.0
    assert prom.value(samples, "nodeagent_ready") == 1.0
    assert prom.value(samples, "nodeagent_last_converge_duration_seconds") == 0.25
    with pytest.raises(ValueError):
        m.inc("nodeagent_installs_total", -1)  # a counter never goes down
    with pytest.raises(KeyError):
        m.inc("nodeagent_not_a_metric")


def test_two_agents_in_one_process_keep_their_own_values():
    a, b = Metrics(), Metrics()  # a second registration would raise on a shared (global) registry
    a.inc("nodeagent_installs_total")
    assert a.get("nodeagent_installs_total") == 1.0 and b.get("nodeagent_installs_total") == 0.0

