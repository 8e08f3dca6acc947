"""Run the real nodeagent CLI in a process whose file descriptors are all taken but FREE.

    python3 tests/support/fd_starved.py FREE nodeagent-args...

What idle connections did to the agent (security review M2): every descriptor in use, so the next
open() of a host file fails with EMFILE. Every nodeagent module is imported first (imports open
files too), then the descriptor limit is lowered and filled with /dev/null, FREE are closed again,
and `nodeagent.cli.main` runs in this very process, so its reads really fail.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import nodeagent  # noqa: E402

LIMIT = 256


def main() -> int:
    free, argv = int(sys.argv[1]), sys.argv[2:]
    for module in pkgutil.walk_packages(nodeagent.__path__, "nodeagent."):
        if not module.name.endswith("__main__"):  # that one runs the CLI on import
            importlib.import_module(module.name)
    from nodeagent import cli

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(LIMIT, hard), hard))
    taken = []
    while True:
        try:
            taken.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            break
    for _ in range(free):
        os.close(taken.pop())
    return cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
