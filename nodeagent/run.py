"""The only way nodeagent runs a subprocess.

Errors carry the command, exit code and stderr (CommandFailed). Tests can set
`FORBID` to make any unexpected subprocess an assertion error.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

import structlog

from nodeagent.errors import CommandFailed

log = structlog.get_logger(__name__)

# Tests may set this to a callable(argv) -> None that raises for forbidden commands.
FORBID = None


def run(
    argv: Sequence[str],
    *,
    timeout: float = 60,
    check: bool = True,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    hint: str | None = None,
) -> subprocess.CompletedProcess:
    """Run argv (never through a shell), capture output as text, raise CommandFailed on error."""
    argv = [os.fspath(a) for a in argv]
    if FORBID is not None:
        FORBID(argv)
    log.debug("run", argv=argv)
    try:
        proc = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise CommandFailed(argv, None, stderr, hint) from None
    except FileNotFoundError:
        raise CommandFailed(argv, 127, f"{argv[0]}: not found", hint) from None
    except PermissionError as exc:
        raise CommandFailed(argv, 126, str(exc), hint) from None
    result = subprocess.CompletedProcess(
        argv, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, result.stderr or result.stdout, hint)
    return result
