"""The overhead recommendation as arithmetic: worst sandbox + margin, rounded up; stats; render."""

from __future__ import annotations

from nodeagent import measure
from nodeagent.measure import MI, RuntimeMeasure, SandboxCost


def _cost(rss_mi: float, cpu: float) -> SandboxCost:
    return SandboxCost(processes=[{"name": "runsc-sandbox", "pid": 1, "rss": int(rss_mi * MI), "pss": int(rss_mi * MI) // 3}],
                       cpu_millicores=cpu)


def test_recommendation_is_the_worst_sandbox_plus_margin_rounded_up():
    recommended, method = measure.recommend([_cost(40, 1.0), _cost(45.6, 21.0), _cost(43, 0.0)], 2.0)
    assert recommended == {"memory": "55Mi", "cpu": "30m"}  # 45.6 * 1.2 = 54.72 -> 55; 21 * 1.2 = 25.2 -> 30
    assert "largest RSS" in method and "2s window" in method


def test_idle_cpu_still_recommends_the_floor():
    assert measure.recommend([_cost(10, 0.0)], 2.0)[0] == {"memory": "12Mi", "cpu": f"{measure.CPU_STEP}m"}


def test_report_of_a_measured_and_a_skipped_runtime():
    measured = RuntimeMeasure("gvisor", "runsc-do", sandboxes=2, costs=[_cost(40, 5.0), _cost(50, 0.0)])
    data = measured.as_dict()
    assert data["stats"]["rss"]["max"] == 50 * MI and data["stats"]["rss"]["min"] == 40 * MI
    assert data["stats"]["cpu_millicores"]["p95"] == 5.0
    assert data["recommended"] == {"memory": "60Mi", "cpu": "10m"}
    assert "recommended overhead.podFixed: memory 60Mi, cpu 10m" in "\n".join(measure.render(measured))
    skipped = RuntimeMeasure("kata", "cri", skipped=True, reason="Kata is not installed")
    assert "recommended" not in skipped.as_dict()
    assert measure.render(skipped) == ["kata    measure skipped: Kata is not installed"]
