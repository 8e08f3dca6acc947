"""The contract's JSON on the captured host trees, as golden files: `detect`, `plan` and
`install --dry-run` (with and without --skip-eligibility) per tree under tests/fixtures/hosts.

The goldens were captured from main at 893877f, before facts became typed, so a test can show
the redesign left the JSON byte-for-byte unchanged (doctor's were added later, after checking that
893877f and the typed-facts branch print the same bytes on every tree). They were re-captured once
since, after the redesign's merge, for the additions of issues 15 and 16 only (new keys
`virtualization.confidential`, `containerd.devmapper_pool`/`cri_snapshotter`, `runtimes.kata.shims`,
`restart_impact`; the runsc handler's `pod_annotations` and runsc.toml's `net-raw` lines; the default
Kata version; doctor's `gvisor-options` and `shim-eligibility`), each old key byte-for-byte the same.
Re-capture on purpose only (a contract change), with `python3 -m tests.support.golden_json` from
the checkout's root.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.cli import run_cli
from tests.support.mirror import default_mirror

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
HOSTS = FIXTURES / "hosts"
GOLDEN = FIXTURES / "json-golden"

# name of the golden file -> the command's arguments after --root
COMMANDS: dict[str, tuple[str, ...]] = {
    "detect": ("detect",),
    "plan": ("plan",),
    "plan-all": ("plan", "--skip-eligibility"),
    "install-dry-run": ("install", "--dry-run"),
    "install-dry-run-all": ("install", "--dry-run", "--skip-eligibility"),
    # not in issue 12's list, but doctor reads the same facts through the observer
    "doctor": ("doctor",),
}


def trees() -> list[str]:
    return sorted(p.name for p in HOSTS.iterdir() if p.is_dir())


def render(tree: str, command: str) -> str:
    """The exit code and stdout of one command on one tree, with this run's paths made neutral."""
    root = HOSTS / tree
    proc = run_cli("-o", "json", "--root", str(root), *COMMANDS[command])
    said = [line for line in proc.stderr.splitlines() if line.startswith(("error:", "hint:"))]
    text = "\n".join([f"exit {proc.returncode}", *said, proc.stdout])
    return text.replace(str(root), "<ROOT>").replace(str(default_mirror()), "<MIRROR>")


def golden_path(tree: str, command: str) -> Path:
    return GOLDEN / tree / f"{command}.json"


def capture() -> None:
    for tree in trees():
        for command in COMMANDS:
            path = golden_path(tree, command)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(tree, command))
            print(path.relative_to(FIXTURES), file=sys.stderr)


if __name__ == "__main__":
    capture()
