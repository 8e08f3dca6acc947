"""One root error type; every known failure carries a hint and an exit code.

The CLI turns these into exactly two stderr lines (`error:` and `hint:`); anything
that is not a NodeagentError is a bug and only shows its traceback at -v.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_WARN = 1
EXIT_FAIL = 2
EXIT_LOCKED = 3
EXIT_USAGE = 64


class NodeagentError(Exception):
    """A failure we understand: what happened, and what the operator should do."""

    exit_code = EXIT_FAIL
    default_hint = "run again with -v for details"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint


class UsageError(NodeagentError):
    exit_code = EXIT_USAGE
    default_hint = "see `nodeagent --help`"


class HostError(NodeagentError):
    """The host root is unusable (missing, unreadable)."""

    default_hint = "check --root points at the node's root filesystem"


class LockHeld(NodeagentError):
    exit_code = EXIT_LOCKED
    default_hint = "another nodeagent is running; wait for it to finish"


class CommandFailed(NodeagentError):
    """A subprocess failed; carries the command, exit code and stderr."""

    def __init__(self, argv: list[str], returncode: int | None, stderr: str, hint: str | None = None):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        what = "timed out" if returncode is None else f"exited {returncode}"
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        msg = f"`{' '.join(self.argv[:3])}` {what}" + (f": {tail}" if tail else "")
        super().__init__(msg, hint)


class ConfigError(NodeagentError):
    """containerd configuration is unusable or would be made unusable."""

    default_hint = "fix the containerd configuration by hand, then run again"


class ConflictError(NodeagentError):
    default_hint = "pass --force to replace the existing settings"


class ArtifactError(NodeagentError):
    default_hint = "check the mirror / network and the artifact digests"


class KubeError(NodeagentError):
    default_hint = "check --kubeconfig / the service account and the API server"
