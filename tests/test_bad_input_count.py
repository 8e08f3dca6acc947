"""The bad-input catalogue's size is pinned, and the README shows the same number.

Adding (or losing) a case changes `python3 bench/count_bad_input.py`'s total: update the pin
below and the README's "Bad-input catalogue: N cases" together, so neither drifts.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BAD_INPUT_CASES = 223  # the pin


def test_catalogue_count_is_pinned():
    proc = subprocess.run([sys.executable, "bench/count_bad_input.py", "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    counted = json.loads(proc.stdout)
    assert counted["total"] >= 80, "the catalogue must cover at least 80 distinct bad inputs"
    assert counted["total"] == BAD_INPUT_CASES, counted["per_file"]


def test_readme_shows_the_pinned_count():
    found = re.search(r"\*\*Bad-input catalogue: (\d+)", (REPO / "README.md").read_text())
    assert found, "README.md lost its 'Bad-input catalogue: N' line"
    assert int(found.group(1)) == BAD_INPUT_CASES
