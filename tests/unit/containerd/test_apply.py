"""apply.preflight's mount-point check: a bind-mounted file is refused, an overlayfs file is not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = """
import sys
from pathlib import Path
from nodeagent.containerd.apply import _is_mount_point
print(_is_mount_point(Path(sys.argv[1])), _is_mount_point(Path(sys.argv[2])))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")
def test_bind_mounted_file_is_a_mount_point_and_overlay_file_is_not(tmp_path):
    for name in ("lower", "rw", "merged", "bind"):
        (tmp_path / name).mkdir()
    (tmp_path / "bind/config.toml").write_text("b\n")
    (tmp_path / "bind/source.toml").write_text("c\n")
    # upper layer on its own tmpfs (as in kind nodes and the systemd node harness): a file written
    # through the overlay lives there and stat() reports the tmpfs' st_dev, not the overlay's
    shell = (
        f"mount -t tmpfs rw {tmp_path}/rw && mkdir {tmp_path}/rw/upper {tmp_path}/rw/work"
        f" && mount -t overlay ov -o lowerdir={tmp_path}/lower,upperdir={tmp_path}/rw/upper,workdir={tmp_path}/rw/work {tmp_path}/merged"
        f" && echo a > {tmp_path}/merged/config.toml"
        f" && test $(stat -c %d {tmp_path}/merged/config.toml) != $(stat -c %d {tmp_path}/merged)"
        f" && mount --bind {tmp_path}/bind/source.toml {tmp_path}/bind/config.toml"
        f" && exec {sys.executable} -c '{SCRIPT}' {tmp_path}/bind/config.toml {tmp_path}/merged/config.toml"
    )
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", shell],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    # overlayfs reports a different st_dev for the file than for its directory: still no mount point
    assert proc.stdout.split() == ["True", "False"]
