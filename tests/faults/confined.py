"""Run one nodeagent command against a root on a tmpfs that is full or read-only.

Executed as `unshare -m --propagation private python3 confined.py MODE ROOT TEMPLATE ARGS...`,
so the tmpfs and bind mounts exist only in that private mount namespace and vanish with it:
the machine's real mounts are never touched. MODE:
- `full`: ROOT is a 2 MiB tmpfs; the template's small files are copied in, the 50 MB containerd
  binary is bind-mounted (it takes no tmpfs space), so the config fits but no artifact does.
- `filled`: ROOT is a 64 MiB tmpfs holding the template, then filled to the last byte.
- `ro`: ROOT is the template on a tmpfs remounted read-only.
- `ro-etc`: only ROOT/etc is read-only (the config cannot be written; artifacts could be).
- `ro-bin`: only ROOT/usr/local/bin is read-only (our links there cannot be removed).
Prints JSON: the command's exit code, stderr, and the snapshot diff of ROOT (made inside the
namespace, where the tmpfs is visible).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nodeagent.host import HostRoot  # noqa: E402
from tests.support.tree import diff_snapshots, snapshot  # noqa: E402

BINARY = "usr/bin/containerd"


def populate(root: Path, template: Path) -> None:
    shutil.copytree(template, root, symlinks=True, dirs_exist_ok=True,
                    ignore=lambda d, names: {"containerd"} if d == str(template / "usr/bin") else set())
    (root / BINARY).touch()
    subprocess.run(["mount", "-n", "--bind", str(template / BINARY), str(root / BINARY)], check=True)


def fill(path: Path) -> None:
    """Write until ENOSPC, in shrinking blocks, so not even one page is left."""
    with open(path, "wb", buffering=0) as fh:
        for block in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    fh.write(b"\0" * block)
            except OSError:
                continue


def main() -> int:
    mode, root, template, *args = sys.argv[1:]
    root, template = Path(root), Path(template)
    size = "2m" if mode == "full" else "64m"
    subprocess.run(["mount", "-n", "-t", "tmpfs", "-o", f"size={size},mode=755", "nodeagent-fault", str(root)],
                   check=True)
    populate(root, template)
    if mode == "filled":
        fill(root / "filler")
    elif mode == "ro":
        subprocess.run(["mount", "-n", "-o", "remount,ro", str(root)], check=True)
    elif mode in ("ro-etc", "ro-bin"):
        sub = root / ("etc" if mode == "ro-etc" else "usr/local/bin")
        subprocess.run(["mount", "-n", "--bind", str(sub), str(sub)], check=True)
        subprocess.run(["mount", "-n", "-o", "remount,bind,ro", str(sub)], check=True)
    before = snapshot(root)
    proc = subprocess.run([sys.executable, "-m", "nodeagent", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=300)
    after = snapshot(root)
    host = HostRoot(root)
    dangling = [str(p.relative_to(root)) for p in root.rglob("*")
                if p.is_symlink() and not host.resolve("/" + str(p.relative_to(root))).exists()]
    print(json.dumps({"rc": proc.returncode, "stderr": proc.stderr, "stdout": proc.stdout,
                      "diff": diff_snapshots(before, after), "dangling": dangling}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
