"""Build a tiny OCI image (busybox-static + a few applets) and import it into a real containerd.

Nothing can be pulled on these machines, so tests make their own images: one uncompressed layer
with /bin/busybox and applet symlinks, a config, a manifest, index.json, as an OCI image-layout
tarball. `ctr images import` then takes it like any registry image. The same image serves as the
sandbox ("pause") image the test configs name (it just sleeps).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import tarfile
import time
from pathlib import Path

from tests.support.containerd_daemon import SANDBOX_IMAGE, ContainerdDaemon

BUSYBOX = Path(shutil.which("busybox") or "/bin/busybox")
APPLETS = ("sh", "uname", "dmesg", "sleep", "cat", "echo", "true", "ls", "head")
TEST_IMAGE = "localhost/nodeagent-test/busybox:1"

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "s390x": "s390x", "ppc64le": "ppc64le"}


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, *, mode: int = 0o755,
         kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, 0, 0, 0
    info.linkname = link
    info.size = len(data) if data is not None else 0
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def rootfs_layer() -> bytes:
    """An uncompressed tar: /bin/busybox, applet symlinks, the usual empty mount points."""
    if not BUSYBOX.exists():
        raise FileNotFoundError("busybox-static is not installed (apt-get install busybox-static)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "run"):
            _add(tar, d, kind=tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else 0o755)
        _add(tar, "bin/busybox", BUSYBOX.read_bytes())
        for applet in APPLETS:
            _add(tar, f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox", mode=0o777)
        _add(tar, "etc/passwd", b"root:x:0:0:root:/:/bin/sh\n", mode=0o644)
        _add(tar, "etc/group", b"root:x:0:\n", mode=0o644)
    return buf.getvalue()


def build_oci_archive(dest: str | os.PathLike, names: list[str], cmd: list[str] | None = None) -> Path:
    """Write an OCI image-layout tarball to `dest` holding one image under every name in `names`."""
    layer = rootfs_layer()
    config = json.dumps({
        "architecture": _ARCH.get(platform.machine(), platform.machine()),
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": cmd or ["/bin/sleep", "2147483647"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _digest(layer), "size": len(layer)}],
    }, sort_keys=True).encode()
    index = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": _digest(manifest),
                "size": len(manifest),
                # containerd names the image after io.containerd.image.name; ref.name is the OCI tag
                "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]},
            }
            for name in names
        ],
    }, sort_keys=True).encode()
    dest = Path(dest)
    with tarfile.open(dest, "w") as tar:
        _add(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode(), mode=0o644)
        _add(tar, "index.json", index, mode=0o644)
        _add(tar, "blobs", kind=tarfile.DIRTYPE)
        _add(tar, "blobs/sha256", kind=tarfile.DIRTYPE)
        for blob in (layer, config, manifest):
            _add(tar, f"blobs/sha256/{_digest(blob).split(':')[1]}", blob, mode=0o644)
    return dest


def import_test_images(daemon: ContainerdDaemon, names: tuple[str, ...] = (TEST_IMAGE, SANDBOX_IMAGE)) -> float:
    """Build the busybox image and import it under `names` into the daemon's k8s.io namespace.

    Returns the seconds it took. The default names include the sandbox image the generated
    configs use, so pods can start.
    """
    start = time.monotonic()
    archive = build_oci_archive(daemon.work / "images.oci.tar", list(names))
    daemon.ctr("images", "import", str(archive), timeout=60)
    listed = daemon.ctr("images", "ls", "-q").stdout.split()
    missing = [n for n in names if n not in listed]
    if missing:
        raise AssertionError(f"ctr import did not create {missing}; it lists {listed}")
    archive.unlink()
    wait_until_cri_sees(daemon.socket, names)
    return time.monotonic() - start


def wait_until_cri_sees(socket: str | os.PathLike, names, timeout: float = 15.0) -> None:
    """Wait until CRI's image store knows the imported images.

    containerd 2.x updates CRI's store from image events, asynchronously: under load a pod started
    right after `ctr images import` can still miss its sandbox image and try to pull it. A daemon
    whose CRI plugin is broken (fault tests) is not waited for.
    """
    from nodeagent.containerd.cri import CriClient, CriError

    deadline = time.monotonic() + timeout
    with CriClient(socket, timeout=5) as client:
        if not client.status().plugin_ok:
            return
        pending = list(names)
        while pending:
            try:
                pending = [n for n in pending if not client.image_present(n)]
            except CriError:
                pass
            if not pending:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"CRI does not see imported images {pending} after {timeout}s")
            time.sleep(0.05)
