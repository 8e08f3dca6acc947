"""The test suite's default artifact mirror: a directory in the contract's mirror layout.

It holds Debian's REAL runsc and STAND-INS for the shims that cannot be had here: a copy of
containerd-shim-runc-v2 as containerd-shim-runsc-v1, and a copy of the runc shim as Kata's
containerd-shim-kata-v2 (the runc shim can serve a handler without options, so a `kata` pod
really reaches SANDBOX_READY through it — the plumbing is real, the VM is not). Built once per
test process (gVisor `latest`, Kata at the default version) and removed at exit.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from nodeagent.settings import Settings
from tests.support import mirror_builder as builders

_MIRROR: Path | None = None


def default_mirror() -> Path:
    global _MIRROR
    if _MIRROR is None:
        base = Path(tempfile.mkdtemp(prefix="nodeagent-mirror-"))
        atexit.register(shutil.rmtree, base, True)
        builders.gvisor_tarball_release(base, "latest")
        builders.kata_release(base, Settings().kata_version,
                              builders.kata_members(shim=builders.STANDIN_SHIM))
        _MIRROR = base
    return _MIRROR
