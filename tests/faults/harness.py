"""SIGKILL `nodeagent install` / `uninstall` at seeded random moments and judge what is left.

Why this exists: an operator's node must never be left between two states, whatever kills the
agent (OOM killer, node drain, a `kubectl delete pod --force`). SIGTERM is held back by the
product during the write/restart window; SIGKILL cannot be, so the files themselves must be
switched atomically and a re-run must finish the job.

Everything is real except the containerd *daemon*: each kill point gets its own fake root (a
copy of a template root holding a real containerd 1.6 binary, Debian's real config layout and
the suite's directory mirror with Debian's real runsc and stand-in shims), and nodeagent runs
with `--restart none`, so a kill point costs about a second. The systemd-node variant (real
restarts) lives in test_kill_systemd.py (2 points in CI, more in scripts/faults).

After each kill:
- real containerd parses the config (`containerd --config X config dump`);
- the config is byte-for-byte the original or the converged one, and when it is the converged
  one every artifact it relies on is complete and linked (the new state is in effect);
- no file under /opt/nodeagent/<runtime>/<version>/ differs from a completed install's (no
  partial binary), no `*.partial` outside the download cache, no dangling symlink of ours;
then a re-run (the same code the CLI calls, in this process) converges, leaves no
`.nodeagent-tmp-*` or `*.partial` anywhere, and a second re-run reports changed=false.

Used by the pytest tests (a reduced seeded set in CI) and by scripts/faults (the full set).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nodeagent.fsutil import TEMP_PREFIX
from nodeagent.host import HostRoot
from tests.support.containerd_daemon import minimal_config
from tests.support.mirror import default_mirror
from tests.support.tree import snapshot
from tests.unit.containerd.scenarios import BINARIES, install_containerd

CONFIG = "etc/containerd/config.toml"
CACHE = "var/lib/nodeagent/cache"
LINKS = ("usr/local/bin/runsc", "usr/local/bin/containerd-shim-runsc-v1", "usr/local/bin/containerd-shim-kata-v2",
         "opt/kata")
# summary lines printed at the end of a pytest run (see conftest.py)
REPORTS: list[str] = []

RUNTIMES = {"kata": ["kata"], "gvisor": ["gvisor"], "all": ["gvisor", "kata"]}


def cli_env(tmpdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODEAGENT_")}
    env.update(NODEAGENT_MIRROR=str(default_mirror()), NODEAGENT_LOG_FORMAT="json", TMPDIR=str(tmpdir))
    return env


def copy_root(src: Path, dst: Path) -> None:
    """A private copy of a root; the 50 MB containerd binary is hard-linked (nodeagent never writes it)."""
    binary = "usr/bin/containerd"
    shutil.copytree(src, dst, symlinks=True,
                    ignore=lambda d, names: {"containerd"} if d == str(src / "usr/bin") else set())
    os.link(src / binary, dst / binary)


def argv(root: Path, op: str, runtime: str) -> list[str]:
    base = [sys.executable, "-m", "nodeagent", "--root", str(root), "-o", "json", op, "--runtime", runtime,
            "--restart", "none"]
    return base + (["--skip-eligibility"] if op == "install" else [])


def settings(root: Path, runtime: str):
    from nodeagent.settings import Settings

    return Settings(root=str(root), runtime=runtime, skip_eligibility=True, restart="none",
                    mirror=str(default_mirror()))


def converge(root: Path, op: str, runtime: str):
    """One run of install/uninstall through the code the CLI calls (nodeagent.converge)."""
    from nodeagent import converge as converge_mod

    return getattr(converge_mod, op)(settings(root, runtime))


def _timed_run(root: Path, op: str, runtime: str) -> tuple[float, float]:
    """(duration, seconds from start until the config was written) of one complete CLI run."""
    tmp = Path(tempfile.mkdtemp(prefix="na-faults-tmp-"))
    try:
        start_wall, start = time.time(), time.perf_counter()
        proc = subprocess.run(argv(root, op, runtime), env=cli_env(tmp), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (op, proc.stderr[-2000:])
        return time.perf_counter() - start, (root / CONFIG).stat().st_mtime - start_wall
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def release_trees(root: Path) -> dict[str, dict]:
    """host dir of each installed release -> its snapshot (what a complete install looks like)."""
    out = {}
    opt = root / "opt/nodeagent"
    for rt_dir in sorted(opt.iterdir()) if opt.is_dir() else []:
        for version in sorted(rt_dir.iterdir()):
            if not version.name.startswith(TEMP_PREFIX):
                out[f"opt/nodeagent/{rt_dir.name}/{version.name}"] = snapshot(version, metadata=False)  # compared across roots
    return out


@dataclass
class Reference:
    """A template root and what a completed install/uninstall of it looks like, measured once."""

    runtime: str
    template: Path
    installed: Path
    original_config: bytes
    converged_config: bytes
    releases: dict[str, dict]
    durations: dict[str, float] = field(default_factory=dict)
    write_at: dict[str, float] = field(default_factory=dict)
    started: dict[Path, float] = field(default_factory=dict)  # kill root -> wall time its run began

    @classmethod
    def build(cls, base: Path, runtime: str, parallel: int = 1, warm_up: bool = True) -> "Reference":
        """Template, warm-up run, then `parallel` concurrent timed runs (the kill runs' load)."""
        template = base / "template"
        (template / "etc/containerd").mkdir(parents=True)
        (template / CONFIG).write_text(minimal_config("1.6", base / "daemon-work"))
        install_containerd(template, "1.6")
        ref = cls(runtime, template, base / "installed", (template / CONFIG).read_bytes(), b"", {})
        if warm_up:  # byte-compiles, fills the page cache: the timings below are steady-state
            warm = base / "warm-up"
            copy_root(template, warm)
            for op in ("install", "uninstall"):
                _timed_run(warm, op, runtime)
            shutil.rmtree(warm)
        works = [base / f"calibrate-{i}" for i in range(max(1, parallel))]
        for work in works:
            copy_root(template, work)
        for op in ("install", "uninstall"):
            with ThreadPoolExecutor(len(works)) as pool:
                timings = list(pool.map(lambda w: _timed_run(w, op, runtime), works))
            ref.durations[op] = statistics.median(t[0] for t in timings)
            ref.write_at[op] = statistics.median(t[1] for t in timings)
            if op == "install":
                ref.converged_config = (works[0] / CONFIG).read_bytes()
                ref.releases = release_trees(works[0])
                assert ref.releases and ref.converged_config != ref.original_config, "reference install did nothing"
                copy_root(works[0], ref.installed)
        for work in works:
            assert (work / CONFIG).read_bytes() == ref.original_config, "reference uninstall did not restore"
            shutil.rmtree(work)
        return ref

    def points(self, op: str, count: int, rng: random.Random) -> list[tuple[str | None, float]]:
        """(anchor, delay) per kill point: 40 % a delay from the start, uniform over the measured run
        (the machine's load stretches runs, so they reach further in); 60 % anchored on an event
        seen in the root (the run lock taken, a staging dir appearing, the release dir in place,
        the config switched), then a delay of up to 100 ms: the windows where files change."""
        anchors = list(EVENTS[op])
        out: list[tuple[str | None, float]] = []
        for i in range(count):
            if i % 5 < 2:
                out.append((None, rng.uniform(0.0, self.durations[op] * 1.2)))
            else:
                out.append((anchors[i % len(anchors)], rng.uniform(0.0, 0.1)))
        return out


def _any_temp(root: Path) -> bool:
    opt = root / "opt/nodeagent"
    return opt.is_dir() and any(n.name.startswith(TEMP_PREFIX) for d in opt.iterdir() if d.is_dir() for n in d.iterdir())


def _release_present(root: Path) -> bool:
    opt = root / "opt/nodeagent"
    return opt.is_dir() and any(not n.name.startswith(TEMP_PREFIX) for d in opt.iterdir() if d.is_dir() for n in d.iterdir())


# observable moments of a run (polled every ~2 ms from outside; no test hooks in the product)
EVENTS = {
    "install": {
        "lock taken": lambda root, ref: (root / "run/nodeagent.lock").exists(),
        "staging dir": lambda root, ref: _any_temp(root),
        "release in place": lambda root, ref: _release_present(root),
        "config switched": lambda root, ref: (root / CONFIG).read_bytes() != ref.original_config,
    },
    "uninstall": {
        "state read": lambda root, ref: (root / "run/nodeagent.lock").stat().st_mtime > ref.started.get(root, 0),
        "config switched": lambda root, ref: (root / CONFIG).read_bytes() != ref.converged_config,
        "release leaving": lambda root, ref: _any_temp(root) or not _release_present(root),
    },
}


@dataclass
class KillResult:
    op: str
    anchor: str | None
    delay: float
    killed: bool
    config_state: str  # "original" | "converged" | "other"
    problems: list[str]


@dataclass
class Tally:
    tried: int = 0
    killed: int = 0
    finished_first: int = 0
    left_original: int = 0
    left_converged: int = 0
    corruptions: list[str] = field(default_factory=list)

    def add(self, r: KillResult) -> None:
        self.tried += 1
        self.killed += r.killed
        self.finished_first += not r.killed
        self.left_original += r.config_state == "original"
        self.left_converged += r.config_state == "converged"
        where = f"{r.delay:.3f}s after " + (r.anchor or "start")
        self.corruptions += [f"{r.op} killed {where}: {p}" for p in r.problems]

    def summary(self) -> str:
        return (f"kill points tried: {self.tried} (killed {self.killed}, finished before the kill "
                f"{self.finished_first}); left in the old state {self.left_original}, in the new state "
                f"{self.left_converged}; corruptions found: {len(self.corruptions)}")


def _walk(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            yield Path(dirpath) / name


def _leftovers(root: Path) -> list[str]:
    """Temp files anywhere, `.partial` files outside the download cache (resumable there)."""
    out = []
    for p in _walk(root):
        rel = str(p.relative_to(root))
        if p.name.startswith(TEMP_PREFIX):
            out.append(f"temp file left: {rel}")
        elif p.name.endswith(".partial") and not rel.startswith(CACHE + "/"):
            out.append(f"partial file outside the cache: {rel}")
    return out


def check_node(root: Path, ref: Reference, op: str, *, after_rerun: bool) -> tuple[str, list[str]]:
    """The invariants after a kill (or after the re-run): (config state, problems)."""
    problems = []
    config = (root / CONFIG).read_bytes()
    state = {ref.original_config: "original", ref.converged_config: "converged"}.get(config, "other")
    if state == "other":
        problems.append("config is neither the original nor the converged bytes")
    dump = subprocess.run([str(BINARIES["1.6"]), "--config", str(root / CONFIG), "config", "dump"],
                          capture_output=True, text=True, timeout=30)
    if dump.returncode != 0:
        problems.append(f"containerd rejects the config: {dump.stderr.strip()[-300:]}")
    # no partial release: every version dir present is byte-identical to a completed install's
    present = release_trees(root)
    for rel, tree in present.items():
        if ref.releases.get(rel) != tree:
            problems.append(f"incomplete or altered release dir {rel}")
    # our symlinks either absent or pointing into a complete release
    for link in LINKS:
        p = root / link
        if not os.path.lexists(p):
            continue
        target = os.readlink(p)
        if not HostRoot(root).resolve("/" + link).exists():  # absolute targets stay in the root
            problems.append(f"dangling symlink {link} -> {target}")
    # the new state is in effect only with everything it needs
    if state == "converged":
        for runtime in RUNTIMES[ref.runtime]:
            if not any(rel.startswith(f"opt/nodeagent/{runtime}/") for rel in present):
                problems.append(f"config names {runtime}'s handler but its release is missing")
        for link in _links_for(ref.runtime):
            if not HostRoot(root).resolve("/" + link).exists():
                problems.append(f"config names the handlers but {link} is missing")
    leftovers = _leftovers(root)
    if after_rerun:
        problems += leftovers
    else:
        problems += [p for p in leftovers if p.startswith("partial")]
    return state, problems


def _links_for(runtime: str) -> list[str]:
    links = []
    if runtime in ("gvisor", "all"):
        links += ["usr/local/bin/runsc", "usr/local/bin/containerd-shim-runsc-v1"]
    if runtime in ("kata", "all"):
        links += ["usr/local/bin/containerd-shim-kata-v2", "opt/kata"]
    return links


def kill_point(ref: Reference, op: str, anchor: str | None, delay: float, work: Path) -> KillResult:
    """One fresh root, one SIGKILL after `delay` seconds, the checks, the re-runs."""
    root = work / "root"
    copy_root(ref.template if op == "install" else ref.installed, root)
    tmp = work / "tmp"
    tmp.mkdir()
    ref.started[root] = time.time()
    proc = subprocess.Popen(argv(root, op, ref.runtime), env=cli_env(tmp), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    if anchor is not None:
        seen = EVENTS[op][anchor]
        while proc.poll() is None and not seen(root, ref):
            time.sleep(0.002)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    problems = []
    if not killed and proc.returncode != 0:
        problems.append(f"run exited {proc.returncode} unkilled: {err.decode(errors='replace')[-300:]}")
    config_state, found = check_node(root, ref, op, after_rerun=False)
    problems += found
    try:
        report = converge(root, op, ref.runtime)
        final_state, found = check_node(root, ref, op, after_rerun=True)
        want = "converged" if op == "install" else "original"
        if final_state != want:
            problems.append(f"re-run left the config {final_state}, not {want}")
        if op == "install" and release_trees(root) != ref.releases:
            problems.append("re-run did not leave complete releases")
        if op == "uninstall" and release_trees(root):
            problems.append("re-run of uninstall left releases behind")
        problems += [f"after re-run: {p}" for p in found]
        again = converge(root, op, ref.runtime)
        if again.changed:
            problems.append(f"second re-run still changed something: {again.to_json()}")
        del report
    except Exception as exc:  # noqa: BLE001 - any failure to re-converge is what we are looking for
        problems.append(f"re-run failed: {type(exc).__name__}: {exc}")
    shutil.rmtree(work, ignore_errors=True)
    return KillResult(op, anchor, delay, killed, config_state, problems)


def run_campaign(base: Path, runtime: str, points: int, seed: int, workers: int = 4,
                 ops: tuple[str, ...] = ("install", "uninstall")) -> tuple[Reference, Tally]:
    """`points` kill points split over `ops`, seeded, run `workers` at a time."""
    ref = Reference.build(base / "ref", runtime)
    rng = random.Random(seed)
    jobs = []
    per_op = [points // len(ops) + (1 if i < points % len(ops) else 0) for i in range(len(ops))]
    for op, count in zip(ops, per_op):
        jobs += [(op, anchor, d) for anchor, d in ref.points(op, count, rng)]
    tally = Tally()
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(kill_point, ref, op, anchor, delay, base / f"point-{i:04d}")
                   for i, (op, anchor, delay) in enumerate(jobs)]
        for f in futures:
            tally.add(f.result())
    return ref, tally
