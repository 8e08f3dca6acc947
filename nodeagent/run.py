"""The only way nodeagent runs a subprocess.

Errors carry the command, exit code and stderr (CommandFailed).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

import structlog

from nodeagent.errors import CommandFailed

log = structlog.get_logger(__name__)

NOBODY = 65534  # the overflow uid/gid: owns nothing on a node
UNPRIVILEGED_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def unprivileged(argv: Sequence[str]) -> list[str]:
    """argv wrapped to run as nobody, with no groups, no capabilities (bounding set included),
    no_new_privs, and in a new network namespace that holds only a down loopback.

    For binaries nodeagent must run only to learn something about them (e.g. `runsc --version`
    of a freshly downloaded `latest`): even verified, they are the server's code, not ours.
    """
    # Emptying the bounding set needs CAP_SETPCAP, which the systemd unit does not keep; without
    # it, no_new_privs plus a non-root uid already mean no exec can gain a capability.
    bounding = ["--bounding-set=-all"] if _effective_cap(CAP_SETPCAP) else []
    # setpriv first, then an unprivileged `unshare --user --net`: a new network namespace then
    # needs no CAP_SYS_ADMIN, which the hardened systemd unit does not keep (RestrictNamespaces
    # allows user and net).
    return [
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
        "--inh-caps=-all", *bounding, "--no-new-privs", "--",
        "unshare", "--user", "--net", "--",
        *(os.fspath(a) for a in argv),
    ]


CAP_SETPCAP = 8


def _effective_cap(bit: int) -> bool:
    try:
        with open("/proc/self/status") as fh:
            line = next(l for l in fh if l.startswith("CapEff:"))
        return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, StopIteration, ValueError):
        return False


def run(
    argv: Sequence[str],
    *,
    timeout: float = 60,
    check: bool = True,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    hint: str | None = None,
    as_nobody: bool = False,
) -> subprocess.CompletedProcess:
    """Run argv (never through a shell), capture output as text, raise CommandFailed on error.

    `as_nobody`: run it unprivileged and offline (see `unprivileged`), from `/`, with a
    minimal environment unless `env` is given.
    """
    argv = unprivileged(argv) if as_nobody else [os.fspath(a) for a in argv]
    if as_nobody:
        env = UNPRIVILEGED_ENV if env is None else env
        cwd = cwd or "/"
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



def spawn(argv: Sequence[str], *, stderr=subprocess.DEVNULL, cwd: str | None = None,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start argv (no shell) in its own session and return at once: for a process that must keep
    running while we watch it (a sandbox being measured). stdout is a pipe; give `stderr` a file,
    never a pipe nobody drains. The caller ends the process and waits for it."""
    argv = [os.fspath(a) for a in argv]
    log.debug("spawn", argv=argv)
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, cwd=cwd,
                                env=env, start_new_session=True)
    except FileNotFoundError:
        raise CommandFailed(argv, 127, f"{argv[0]}: not found") from None
    except PermissionError as exc:
        raise CommandFailed(argv, 126, str(exc)) from None
