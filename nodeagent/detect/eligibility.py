"""Which sandbox runtimes this host can run, and why not: pure functions of the facts.

The rules are each runtime plug-in's (`nodeagent/runtimes/<name>.py`, `eligibility`).
"""

from __future__ import annotations

import re

from nodeagent import runtimes as runtime_plugins
from nodeagent.facts import HostFacts, RuntimeVerdict


def kernel_tuple(release: str | None) -> tuple[int, int, int] | None:
    """'6.18.44-fc-v782' -> (6, 18, 44); '5.4' -> (5, 4, 0); garbage -> None."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release or "")
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def evaluate(facts: HostFacts) -> dict[str, RuntimeVerdict]:
    """Each runtime plug-in's verdict on these facts, in the registry's order."""
    return {rt.name: rt.eligibility(facts) for rt in runtime_plugins.ALL}
