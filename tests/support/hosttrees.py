"""Captured host trees (tests/fixtures/hosts) and real device nodes for detection tests."""

import os
import shutil
from pathlib import Path

import pytest

HOSTS = Path(__file__).resolve().parents[1] / "fixtures" / "hosts"
KVM_DEV = (10, 232)  # misc device minor of /dev/kvm
VHOST_VSOCK_DEV = (10, 241)  # misc device minor of /dev/vhost-vsock


def copy_host(name: str, dest: Path) -> Path:
    """A private copy of tests/fixtures/hosts/<name> (symlinks kept) that a test may change."""
    target = dest / name
    shutil.copytree(HOSTS / name, target, symlinks=True)
    return target


def real_kvm_available() -> bool:
    return os.geteuid() == 0 and os.path.exists("/dev/kvm")


needs_real_kvm = pytest.mark.skipif(
    not real_kvm_available(), reason="needs root and this machine's /dev/kvm to create a working device node"
)


def mknod_char(path: Path, major_minor: tuple[int, int]) -> None:
    """A real character device node inside a copied tree: the kernel answers for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(path):
        path.unlink()
    os.mknod(path, 0o600 | 0o020000, os.makedev(*major_minor))
