"""Per-runtime knowledge: option files and handler tables for gVisor and Kata.

`NAMES` is the one list of runtimes nodeagent knows, and `selected()` reads the `runtime`
setting against it; the rest of a runtime's knowledge is still spread over artifacts/, kube/ and
containerd/ (moving it here, one module per runtime, is issue 12's next step).
"""

from __future__ import annotations

NAMES: tuple[str, ...] = ("gvisor", "kata")


def selected(setting: str) -> list[str]:
    """The runtimes `--runtime` names: every one for "all", else the one named."""
    return list(NAMES) if setting == "all" else [setting]
