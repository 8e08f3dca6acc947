#!/usr/bin/env python3
"""A stand-in for a real Kata static release: the size, file count and compression of `kata-static`.

    python3 bench/kata_standin.py OUT.tar.zst [--scale 1.0]

Kata's own release cannot run here (no KVM/vhost-vsock), and downloading ~2 GB per bench run is
not an option, so the bench builds an archive shaped like the real one. The shape follows the
listing of a real `kata-static` tarball (kata-containers#3757) and a 3.x release (~2 GB unpacked
with every guest image; here only one image set, as `kata-static` ships since the split of
kata-containers#13488):

- opt/kata/bin: containerd-shim-kata-v2 (49 MB), kata-runtime (50 MB), kata-monitor (27 MB),
  qemu-system-x86_64 (18 MB), cloud-hypervisor (4 MB), firecracker (3.3 MB), jailer (2.6 MB),
  kata-collect-data.sh; the shim is a stand-in (the runc shim), the other binaries are bytes of
  this machine's own ELF files (/usr/bin, /usr/lib), which compress like real binaries (~3:1);
- opt/kata/share/kata-containers: a 256 MB rootfs image (40 % random bytes: compressed payloads,
  60 % binaries), an initrd (30 MB, random: it is gzip inside), vmlinux (38 MB, binary-like),
  vmlinuz (6 MB, random) and its config, with Kata's symlinks (kata-containers.img -> ...);
- opt/kata/share/kata-qemu/qemu: ~320 small firmware/keymap files (1-64 KB), and
  opt/kata/share/defaults/kata-containers: ~20 configuration-*.toml files plus a symlink.

About 490 MB unpacked, ~340 small files; compressed with `tar --zstd` (zstd's default level 3).
Everything is deterministic for a given machine (seeded random, sorted sources).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MB = 1_000_000
STANDIN_SHIM = Path("/usr/bin/containerd-shim-runc-v2")


class Binaries:
    """An endless stream of this machine's ELF bytes (sorted, so the same on every run here)."""

    def __init__(self) -> None:
        self.files = sorted(p for d in ("/usr/bin", "/usr/lib/x86_64-linux-gnu") for p in Path(d).glob("*")
                            if p.is_file() and not p.is_symlink() and p.stat().st_size > 64 << 10)
        self.i = 0

    def take(self, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            out += self.files[self.i % len(self.files)].read_bytes()[: size - len(out)]
            self.i += 1
        return bytes(out)


def write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def build_tree(top: Path, scale: float) -> None:
    rnd = random.Random(20261205)
    bins = Binaries()
    s = lambda n: max(4096, int(n * scale))  # noqa: E731
    kata = top / "opt/kata"
    shim = STANDIN_SHIM.read_bytes()
    write(kata / "bin/containerd-shim-kata-v2", (shim + bins.take(s(49 * MB)))[: max(len(shim), s(49 * MB))], 0o755)
    for name, size in (("kata-runtime", 50), ("kata-monitor", 27), ("qemu-system-x86_64", 18),
                       ("cloud-hypervisor", 4), ("firecracker", 3.3), ("jailer", 2.6)):
        write(kata / "bin" / name, bins.take(s(size * MB)), 0o755)
    write(kata / "bin/kata-collect-data.sh", b"#!/bin/sh\n" + b"# collect data\n" * 1100, 0o755)
    share = kata / "share/kata-containers"
    image = s(256 * MB)
    write(share / "kata-containers-2026.img", rnd.randbytes(image * 4 // 10) + bins.take(image - image * 4 // 10))
    write(share / "kata-containers-initrd-2026.img", rnd.randbytes(s(30 * MB)))
    write(share / "vmlinux-6.12.28-153", bins.take(s(38 * MB)))
    write(share / "vmlinuz-6.12.28-153", rnd.randbytes(s(6 * MB)))
    write(share / "config-6.12.28", b"CONFIG_VIRTIO=y\n" * 4500)
    for link, target in (("kata-containers.img", "kata-containers-2026.img"),
                         ("kata-containers-initrd.img", "kata-containers-initrd-2026.img"),
                         ("vmlinux.container", "vmlinux-6.12.28-153"), ("vmlinuz.container", "vmlinuz-6.12.28-153")):
        (share / link).symlink_to(target)
    qemu = kata / "share/kata-qemu/qemu"
    for i in range(320):
        size = rnd.randint(1 << 10, 64 << 10)
        data = bins.take(size) if i % 3 else (f"# keymap {i}\n" * (size // 12)).encode()
        write(qemu / ("firmware" if i % 3 else "keymaps") / f"file-{i:03d}", data)
    defaults = kata / "share/defaults/kata-containers"
    for flavour in ("qemu", "clh", "fc", "dragonball", "qemu-tdx", "qemu-snp", "qemu-se", "qemu-coco-dev",
                    "qemu-nvidia-gpu", "qemu-runtime-rs", "clh-runtime-rs", "stratovirt", "remote",
                    "qemu-sev", "qemu-cca", "qemu-nvidia-gpu-snp", "qemu-nvidia-gpu-tdx", "fc-runtime-rs",
                    "qemu-se-runtime-rs", "acrn"):
        write(defaults / f"configuration-{flavour}.toml", (f"# stand-in Kata configuration ({flavour})\n" * 300).encode())
    (defaults / "configuration.toml").symlink_to("configuration-qemu.toml")


def build(out: Path, scale: float = 1.0) -> dict:
    """Write OUT (a .tar.zst laid out like kata-static); returns its size, file count, unpacked size."""
    work = Path(tempfile.mkdtemp(prefix="kata-standin-", dir=out.parent))
    try:
        build_tree(work, scale)
        subprocess.run(["tar", "--zstd", "-cf", str(out), "--owner=0", "--group=0", "--numeric-owner",
                        "--sort=name", "--mtime=2026-01-01", "-C", str(work), "./opt"], check=True)
        files = [p for p in work.rglob("*") if p.is_file() and not p.is_symlink()]
        return {"archive_bytes": out.stat().st_size, "files": len(files),
                "unpacked_bytes": sum(p.stat().st_size for p in files)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every big file's size (the smoke test: 0.01)")
    args = ap.parse_args()
    print(build(Path(args.out).resolve(), args.scale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
