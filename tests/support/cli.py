"""Run the real `nodeagent` CLI in a subprocess and check its error contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The running test's own TMPDIR (tests/conftest.py sets it per test), given to every CLI run so
# the bad-input tests can prove a refused command left no temp files behind either.
TMPDIR: Path | None = None


def run_cli(*args: str, env: dict | None = None, timeout: float = 120, input: str | None = None,
            prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`prefix` runs the CLI under a wrapper command (e.g. one that measures its peak memory)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NODEAGENT_")}
    full_env.setdefault("NODEAGENT_LOG_FORMAT", "json")
    # installs fetch artifacts: by default from the suite's directory mirror (real runsc,
    # stand-in shims; see tests/support/mirror.py), never from the internet
    from tests.support.mirror import default_mirror

    full_env.setdefault("NODEAGENT_MIRROR", str(default_mirror()))
    if TMPDIR is not None:
        full_env["TMPDIR"] = str(TMPDIR)
    if env:
        full_env.update(env)
    return subprocess.run(
        [*prefix, sys.executable, "-m", "nodeagent", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        input=input,
    )


def assert_known_error(proc: subprocess.CompletedProcess, exit_code: int = 2) -> str:
    """One `error:` line, one `hint:` line, the expected exit code, no traceback. Returns the error text."""
    assert proc.returncode == exit_code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith(("error:", "hint:"))]
    assert [l.split(":")[0] for l in lines] == ["error", "hint"], proc.stderr
    return lines[0][len("error: "):]
