"""`python -m nodeagent.prepare_lock [PATH]`: make the run lock file root's alone, take no lock.

The systemd units run it as root (`ExecStartPre=+`) because their sandbox makes /run read-only:
the lock file has to exist before the service's mount namespace is set up, so that
`ReadWritePaths=` can bind it writable. It used to be `touch`ed, which made it 0644 (UMask=0022)
and followed symlinks; this uses the same checks as the lock itself (fsutil.RunLock), so a lock
file with another owner or mode, or a symlink, is replaced by a new 0600 file. A sound lock file
is left alone, so a nodeagent holding it keeps it.
"""

from __future__ import annotations

import sys

from nodeagent.errors import NodeagentError
from nodeagent.fsutil import RunLock
from nodeagent.state import LOCK_FILE


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        RunLock.prepare(args[0] if args else LOCK_FILE)
    except NodeagentError as exc:
        sys.stderr.write(f"error: {exc.message}\nhint: {exc.hint}\n")
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
