"""One agent round in a short-lived child process, so the resident agent stays small.

A converge needs grpc (CRI), requests, the containerd and artifact code: ~54 MB RSS once
imported, and Python never gives imported modules back. The resident agent only needs its
loop, the health endpoint and structlog (~31 MB), so each round runs as
`python -m nodeagent.commands.agent_child`: settings in as JSON on stdin, the outcome (or the error,
with its hint and exit code) out as one JSON line on stdout; logs go to the agent's stderr.
Measured (bench/run.py, issue 13): the idle agent held 61.5 MB with rounds in-process, 33.0 MB
with rounds in a child. Lazy imports alone cannot get there: every round speaks CRI, so grpc
would stay loaded after the first one.

The child ignores SIGTERM/SIGINT, like the in-process round did (the agent's handler only asks
the loop to stop after the round): a round is never cut in half by a stop.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

from nodeagent import error_handler
from nodeagent.agent import ConvergeOutcome
from nodeagent.errors import EXIT_FAIL, NodeagentError
from nodeagent.settings import Settings

BUG_HINT = "this is a bug in nodeagent; run again with -v for the traceback and report it"


class ChildError(NodeagentError):
    """A failure the child reported: its message, hint, exit code and whether it rolled back."""

    def __init__(self, message: str, hint: str | None, exit_code: int, rolled_back: bool,
                 rollout_halted: bool = False):
        super().__init__(message, hint)
        self.exit_code = exit_code
        self.rolled_back = rolled_back
        self.rollout_halted = rollout_halted


def run_in_child(settings: Settings) -> ConvergeOutcome:
    """Run one round (converge + Kubernetes labels/events) in a child; raise its failure here."""
    payload = json.dumps(dataclasses.asdict(settings))
    proc = subprocess.run([sys.executable, "-m", "nodeagent.commands.agent_child"], input=payload, text=True,
                          stdout=subprocess.PIPE, stderr=None, env=os.environ.copy(), start_new_session=True)
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise ChildError(f"the converge child exited {proc.returncode} without a result", BUG_HINT,
                         EXIT_FAIL, False) from None
    if "error" in result:
        e = result["error"]
        raise ChildError(e["message"], e["hint"], e["exit_code"], e["rolled_back"], bool(e.get("rollout_halted")))
    return ConvergeOutcome(**result["outcome"])


def _child() -> int:
    error_handler.ignore_stop_signals()  # the agent (our parent) decides when a round ends
    settings = Settings(**json.loads(sys.stdin.read()))
    from nodeagent import logsetup
    from nodeagent.commands.agent import converge_round

    logsetup.configure(settings.log_format, settings.verbosity)
    try:
        outcome = converge_round(settings)()
        print(json.dumps({"outcome": dataclasses.asdict(outcome)}))
        return 0
    except NodeagentError as exc:
        error = {"message": exc.message, "hint": exc.hint, "exit_code": exc.exit_code,
                 "rolled_back": bool(getattr(exc, "rolled_back", False)),
                 "rollout_halted": bool(getattr(exc, "rollout_halted", False))}
    except Exception as exc:  # a bug: the agent logs it and retries, as it did in-process
        error = {"message": f"unexpected {type(exc).__name__}: {exc}", "hint": BUG_HINT, "exit_code": EXIT_FAIL,
                 "rolled_back": False}
    print(json.dumps({"error": error}))
    return error["exit_code"]


if __name__ == "__main__":
    raise SystemExit(_child())
