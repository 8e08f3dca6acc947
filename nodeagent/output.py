"""A command's result: data for `-o json`, text for people, and an exit code."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Result:
    data: dict[str, Any]
    text: str | Callable[[], str] = ""
    exit_code: int = 0
    warnings: list[str] = field(default_factory=list)

    def render(self, fmt: str) -> str:
        if fmt == "json":
            return json.dumps(self.data, indent=2, sort_keys=False, default=str)
        return self.text() if callable(self.text) else self.text


def emit(result: Result, fmt: str, stream=None) -> None:
    stream = stream or sys.stdout
    out = result.render(fmt)
    if out:
        stream.write(out if out.endswith("\n") else out + "\n")
    stream.flush()


def table(rows: list[list[str]], header: list[str] | None = None) -> str:
    """A plain left-aligned table; the last column is never padded."""
    all_rows = ([header] if header else []) + rows
    if not all_rows:
        return ""
    widths = [max(len(str(r[i])) for r in all_rows if i < len(r)) for i in range(len(all_rows[0]))]
    lines = []
    for row in all_rows:
        cells = [str(c).ljust(widths[i]) if i < len(row) - 1 else str(c) for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
