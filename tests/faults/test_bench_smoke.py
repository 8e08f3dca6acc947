"""The bench tools start (the bench itself is not run in CI: it takes minutes and wants a quiet machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_run_starts():
    proc = subprocess.run([sys.executable, str(REPO / "bench/run.py"), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "--quick" in proc.stdout, proc.stderr


def test_bad_input_counter_counts_marked_tests():
    proc = subprocess.run([sys.executable, str(REPO / "bench/count_bad_input.py"), "--json"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    counted = json.loads(proc.stdout)
    assert counted["total"] == sum(counted["per_file"].values()) > 0
    assert "tests/test_bad_input_catalogue.py" in counted["per_file"]
    assert all((REPO / path).is_file() for path in counted["per_file"])
