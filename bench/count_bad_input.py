#!/usr/bin/env python3
"""Count the bad-input catalogue: every test marked `bad_input` (see tests/catalogue/plugin.py).

    python3 bench/count_bad_input.py [--json]

Collects only (`pytest --collect-only -m bad_input`), so it takes seconds; prints the total and
the count per area and per test file. The number goes into the README's "Fault injection" section
and is pinned by tests/test_bad_input_count.py.

What counts: one distinct bad input per collected case. A parametrized test is as many cases as
it has parameters, because each parameter is a different input that takes a different path
to its refusal (a traversal member and a device member fail different checks); one test that
feeds one input is one case, however many assertions it makes. Areas come from AREAS below,
first match wins, so each case is counted once.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# (area, regex on the test id): the kinds of input the catalogue must cover
AREAS = [
    ("races", r"lock_held|race|concurren"),
    ("api", r"kube|api-|runtimeclasses"),
    ("settings", r"settings|pins_file|gvisor_options"),
    ("environment", r"environment|test_env_"),
    ("cli", r"command_line|install_options|cli-|trailing_newline"),
    ("http", r"digest|truncated|404|500|redirect|download_fails|checksum|bounded_failure|http|release_listing"),
    ("configs", r"containerd_config|config_|toml|import|handler|template|v2_table|version_as_string|nested"
                r"|effective_proof|corpus_external"),
    ("archives", r"hostile|tarball|member|huge_dictionary|huge_window|symlink_chain|archive_trust|release_lacks"),
    ("hosts", r"host_faults|read_only|root_that|verify|eligible|discovery_trust|planted_a_link|restart_impact|wrong_shaped_state"),
]


def area(test_id: str) -> str:
    return next((name for name, rx in AREAS if re.search(rx, test_id)), "other")


def collect(expr: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", expr,
                           "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True)
    if proc.returncode not in (0, 5):  # 5: nothing collected
        raise SystemExit(f"pytest --collect-only failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return [line for line in proc.stdout.splitlines() if "::" in line]


def main() -> int:
    ids = collect("bad_input and not xfail")
    known_bugs = collect("bad_input and xfail")  # cases the product still gets wrong (strict xfail)
    per_file = collections.Counter(i.split("::", 1)[0] for i in ids)
    per_area = collections.Counter(area(i) for i in ids)
    if "--json" in sys.argv:
        print(json.dumps({"total": len(ids), "per_area": dict(sorted(per_area.items())),
                          "per_file": dict(sorted(per_file.items())), "known_bugs": known_bugs}, indent=2))
        return 0
    print(f"bad-input cases: {len(ids)}")
    for name, n in sorted(per_area.items(), key=lambda kv: -kv[1]):
        print(f"  {n:4}  {name}")
    print("per file:")
    for path, n in sorted(per_file.items()):
        print(f"  {n:4}  {path}")
    if known_bugs:
        print(f"known bugs (strict xfail, not counted): {len(known_bugs)}")
        for test in known_bugs:
            print(f"        {test}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
