"""Fresh installs as an operator runs them: a whole `nodeagent install` process on an empty root.

(c) gVisor: a 256 MiB runsc from a loopback http mirror vs `curl -s URL | sha512sum`, and the
    install's peak RSS (wait4 of that very process).
(d) Kata: a stand-in shaped like a real kata-static .tar.zst (kata_standin.py) from a directory
    mirror vs the import floor + `tar --zstd -xf` of the same archive.
Each run gets a fresh copy of a template root (copying it is not timed); runs are interleaved, and
each starts after a sync(2), so no run pays for the writeback of the one before it (the Kata
stand-in's generation alone leaves ~1.3 GB to write back).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
from pathlib import Path

from bench.common import IMPORTS, PY, REPO, env, peak_rss_of, ratio_row, row, timed
from bench.kata_standin import build as build_kata
from bench.mirror_server import MirrorServer
from tests.support.scenarios import install_containerd

GVISOR_VERSION = "20240729.0"
KATA_VERSION = "3.20.0"
NA = [PY, "-m", "nodeagent", "-o", "json"]
COMMON = ["install", "--skip-eligibility", "--restart", "none"]


def template_root(base: Path) -> Path:
    """A root with a (not running) containerd 1.6 and its default config: what install edits."""
    root = base / "template-root"
    (root / "etc/containerd").mkdir(parents=True)
    install_containerd(root, "1.6")
    shutil.copyfile(REPO / "tests/fixtures/containerd/default-1.6.toml", root / "etc/containerd/config.toml")
    return root


def fresh_root(template: Path, where: Path) -> Path:
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(template, where, symlinks=True)
    return where


def pins_supported() -> bool:
    """`--pins` arrives with the trust-mirror work; pass it only when this checkout has it."""
    out = subprocess.run(NA[:3] + ["install", "--help"], capture_output=True, text=True, env=env()).stdout
    return "--pins" in out


def _sha512(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gvisor_mirror(base: Path, size: int) -> tuple[Path, Path]:
    """A files-layout gVisor release whose runsc is `size` random bytes, and a pins file for it."""
    mirror = base / "gvisor-mirror"
    d = mirror / "gvisor" / GVISOR_VERSION / "x86_64"
    d.mkdir(parents=True)
    with open(d / "runsc", "wb") as fh:
        for _ in range(size >> 20):
            fh.write(os.urandom(1 << 20))
    shutil.copyfile("/usr/bin/containerd-shim-runc-v2", d / "containerd-shim-runsc-v1")  # stand-in shim
    pins = []
    for name in ("runsc", "containerd-shim-runsc-v1"):
        hexval = _sha512(d / name)
        (d / f"{name}.sha512").write_text(f"{hexval}  {name}\n")
        pins.append(f"{hexval}  gvisor/{GVISOR_VERSION}/x86_64/{name}\n")
    (base / "gvisor.pins").write_text("".join(pins))
    return mirror, base / "gvisor.pins"


def bench_gvisor_install(base: Path, template: Path, runs: int, size_mib: int) -> list[dict]:
    mirror, pins = gvisor_mirror(base, size_mib << 20)
    use_pins = pins_supported()
    floors, subjects, rss = [], [], []
    with MirrorServer(mirror) as url:
        runsc_url = f"{url}/gvisor/{GVISOR_VERSION}/x86_64/runsc"
        argv = NA + COMMON + ["--runtime", "gvisor", "--mirror", url, "--gvisor-version", GVISOR_VERSION]
        if use_pins:
            argv += ["--pins", str(pins)]
        for i in range(runs):
            os.sync()
            floors.append(timed(["bash", "-c", f"curl -s {runsc_url} | sha512sum"], env=env()))
            root = fresh_root(template, base / "gvisor-root")
            os.sync()
            took, peak = peak_rss_of(argv[:3] + ["--root", str(root)] + argv[3:], env=env())
            subjects.append(took)
            rss.append(peak)
    f, s = statistics.median(floors), statistics.median(subjects)
    how = "http mirror + --pins" if use_pins else "http mirror, no --pins (this checkout has none)"
    return [
        ratio_row("gvisor_install", f"fresh install, {size_mib} MiB gVisor runsc, loopback {how}, vs curl | sha512sum",
                  s, f, 1.15, pins=use_pins),
        row("gvisor_install_rss", "peak RSS of that install", max(rss), None, "< 80 MB", max(rss) < 80, unit="MB"),
    ]


def kata_mirror(base: Path, scale: float) -> tuple[Path, Path, str, dict]:
    mirror = base / "kata-mirror"
    d = mirror / "kata" / KATA_VERSION
    d.mkdir(parents=True)
    archive = d / f"kata-static-{KATA_VERSION}-amd64.tar.zst"
    shape = build_kata(archive, scale)
    sha = _sha256_file(archive)
    (d / f"{archive.name}.sha256").write_text(f"{sha}  {archive.name}\n")
    return mirror, archive, sha, shape


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bench_kata_install(base: Path, template: Path, runs: int, scale: float) -> list[dict]:
    mirror, archive, sha, shape = kata_mirror(base, scale)
    argv = COMMON + ["--runtime", "kata", "--mirror", str(mirror), "--kata-version", KATA_VERSION,
                     "--kata-sha256", sha]
    out = base / "tar-out"
    floor_cmd = f"{PY} -c '{IMPORTS}' && tar --zstd -xf {archive} -C {out}"
    floors, subjects = [], []
    for _ in range(runs):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        os.sync()  # no run pays for the writeback of the one before (or of generating the archive)
        floors.append(timed(["bash", "-c", floor_cmd], env=env()))
        root = fresh_root(template, base / "kata-root")
        os.sync()
        subjects.append(timed(NA + ["--root", str(root)] + argv, env=env()))
    shutil.rmtree(out, ignore_errors=True)
    f, s = statistics.median(floors), statistics.median(subjects)
    what = (f"{shape['archive_bytes'] / 1e6:.0f} MB .tar.zst, {shape['unpacked_bytes'] / 1e6:.0f} MB / "
            f"{shape['files']} files unpacked")
    return [ratio_row("kata_install", f"fresh install, Kata stand-in ({what}), directory mirror, vs imports + "
                      "tar --zstd -xf", s, f, 1.25, **shape)]
