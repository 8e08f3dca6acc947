#!/usr/bin/env python3
"""Count the bad-input catalogue: every test marked `bad_input` (see tests/catalogue/plugin.py).

    python3 bench/count_bad_input.py [--json]

Collects only (`pytest --collect-only -m bad_input`), so it takes seconds; prints the total and
the count per test file. The number goes into the README's "Fault injection" section.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


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
    if "--json" in sys.argv:
        print(json.dumps({"total": len(ids), "per_file": dict(sorted(per_file.items())),
                          "known_bugs": known_bugs}, indent=2))
        return 0
    print(f"bad-input tests: {len(ids)}")
    for path, n in sorted(per_file.items()):
        print(f"  {n:4}  {path}")
    if known_bugs:
        print(f"known bugs (strict xfail, not counted): {len(known_bugs)}")
        for test in known_bugs:
            print(f"        {test}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
