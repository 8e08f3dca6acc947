"""Read an agent's /metrics the way Prometheus does: with a real text-format parser
(prometheus_client.parser), not by matching lines."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def parse(text: str) -> dict[str, list[Sample]]:
    """Sample name (e.g. `x_bucket`, `x_total`) -> its samples; raises ValueError on bad exposition."""
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def types(text: str) -> dict[str, str]:
    """Family name -> its TYPE (counter families are named without `_total`)."""
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float | None:
    """The sample with exactly these labels, or None."""
    return next((s.value for s in samples.get(name, []) if s.labels == labels), None)


def total(samples: dict[str, list[Sample]], name: str) -> float:
    """Sum over every label set (`sum(name)` in PromQL); -1 when there is no such sample."""
    found = samples.get(name)
    return sum(s.value for s in found) if found else -1
