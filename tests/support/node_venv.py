"""nodeagent installed for real inside a systemd node, the way the Ansible role installs it.

The node has no network (its own net namespace), so dependencies come from a wheelhouse: the
exact wheels nodeagent depends on, downloaded once with this machine's pip and cached under the
test environment directory (keyed by pyproject.toml, so a dependency change rebuilds it).
nodeagent itself is installed from this checkout (a source directory), as an air-gapped fleet
would install it from a wheelhouse and a source tree.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTENV = Path(os.environ.get("NODEAGENT_TESTENV", "/opt/nodeagent-testenv"))
VENV = "/usr/local/lib/nodeagent/venv"  # the path systemd/nodeagent.service and the role use


def deps_wheelhouse() -> Path:
    """A directory of wheels for nodeagent's dependencies and its build backend (cached)."""
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    base = TESTENV / "wheels"
    target = base / key
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".done").exists():
            return target
        tmp = base / f".{key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(tmp),
             str(REPO), "setuptools>=61", "wheel"],
            check=True, capture_output=True, timeout=600,
        )
        for built in tmp.glob("nodeagent-*.whl"):
            built.unlink()  # nodeagent itself always comes from the checkout under test
        (tmp / ".done").touch()
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        for old in base.iterdir():  # keep the cache to one generation
            if old.is_dir() and old != target and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
    return target


def build_wheel(dest: str | os.PathLike) -> Path:
    """A wheel of this checkout in `dest`, built from a copy so the checkout gets no build/ files."""
    dest = Path(dest)
    source = dest / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "tests", "build", "*.egg-info", "__pycache__",
                                                               ".pytest_cache", "ansible", "vagrant", "bench"))
    # with setuptools and wheel at hand, skip the isolated build env (twice as fast)
    isolation = [] if importlib.util.find_spec("wheel") and importlib.util.find_spec("setuptools") else [
        "--no-index", "--find-links", str(deps_wheelhouse())]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
         *(["--no-build-isolation"] if not isolation else isolation), "-w", str(dest), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    shutil.rmtree(source)
    (wheel,) = dest.glob("nodeagent-*.whl")
    return wheel


def install_in_node(node, venv: str = VENV) -> str:
    """Create `venv` inside the node from Debian's python3 and pip-install this checkout into it.

    Returns the node path of the `nodeagent` console script. Uses this machine's pip (visible
    in the node through its overlay root) with `--python`, which skips bootstrapping a pip into
    the venv and saves ~8 s; the Ansible role test exercises the ordinary `python3 -m venv` path.
    """
    wheels = deps_wheelhouse()
    node.run(["/usr/bin/python3", "-m", "venv", "--without-pip", venv], timeout=120)
    node.run(
        [sys.executable, "-m", "pip", "--python", f"{venv}/bin/python", "install", "-q",
         "--disable-pip-version-check", "--no-index", "--find-links", str(wheels), str(REPO)],
        timeout=300, env={"PIP_CONFIG_FILE": "/dev/null", "HOME": "/root"},
    )
    return f"{venv}/bin/nodeagent"


GVISOR_VERSION = "20221219.0"  # the directory name in the test mirror; Debian bookworm's runsc build


def make_gvisor_mirror(directory: str | os.PathLike) -> Path:
    """gVisor's older release layout (INTERFACE.md "Mirror layout") under `directory`.

    runsc is Debian's real build. containerd-shim-runsc-v1 is a stand-in (a copy of runc's shim):
    no real one can be had on Debian (shared/notes/test-environment.md), so tests judge the
    handler through CRI status and the sandbox itself with `runsc do`.
    """
    release = Path(directory) / "gvisor" / GVISOR_VERSION / "x86_64"
    release.mkdir(parents=True, exist_ok=True)
    shutil.copy2("/usr/bin/runsc", release / "runsc")
    shutil.copy2("/usr/bin/containerd-shim-runc-v2", release / "containerd-shim-runsc-v1")
    pins = []
    for name in ("runsc", "containerd-shim-runsc-v1"):
        digest = hashlib.sha512((release / name).read_bytes()).hexdigest()
        (release / f"{name}.sha512").write_text(f"{digest}  {name}\n")
        pins.append(f"{digest}  gvisor/{GVISOR_VERSION}/x86_64/{name}\n")
    # beside the mirror, as `bundle` writes it: what a plain http mirror needs (INTERFACE.md "Pins")
    Path(directory).with_name(Path(directory).name + ".pins").write_text("".join(pins))
    return Path(directory)
