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

import hashlib
import json
import os
import random
import shutil
import signal
import stat
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
from tests.support.scenarios import BINARIES, install_containerd
from tests.support.tree import diff_snapshots, snapshot

CONFIG = "etc/containerd/config.toml"
STATE = "var/lib/nodeagent/state.json"
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
    # every file under etc/containerd before the install and after it (runsc.toml, drop-ins ...)
    original_files: dict[str, bytes] = field(default_factory=dict)
    converged_files: dict[str, bytes] = field(default_factory=dict)
    # the whole root after a clean install + uninstall (state/cache/lock aside): the original bytes
    uninstalled: dict[str, tuple] = field(default_factory=dict)

    @classmethod
    def build(cls, base: Path, runtime: str, parallel: int = 1, warm_up: bool = True) -> "Reference":
        """Template, warm-up run, then `parallel` concurrent timed runs (the kill runs' load)."""
        template = base / "template"
        (template / "etc/containerd").mkdir(parents=True)
        (template / CONFIG).write_text(minimal_config("1.6", base / "daemon-work"))
        install_containerd(template, "1.6")
        for d in ("opt", "usr/local/bin"):  # there on every real node: nodeagent does not remove them
            (template / d).mkdir(parents=True, exist_ok=True)
        ref = cls(runtime, template, base / "installed", (template / CONFIG).read_bytes(), b"", {})
        ref.original_files = containerd_files(template)
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
                ref.converged_files = containerd_files(works[0])
                assert ref.releases and ref.converged_config != ref.original_config, "reference install did nothing"
                copy_root(works[0], ref.installed)
        for work in works:
            assert (work / CONFIG).read_bytes() == ref.original_config, "reference uninstall did not restore"
            assert content(work) == content(template), "reference uninstall did not restore the original bytes"
        ref.uninstalled = content(works[0])
        for work in works:
            shutil.rmtree(work)
        return ref

    def points(self, op: str, count: int, rng: random.Random) -> list[tuple[str | None, float]]:
        """(anchor, delay) per kill point: 40 % a delay from the start, uniform over the run as
        measured with the kills' parallelism (measured one at a time, runs look shorter than they
        are under the kills' load, and the kills bunch up in interpreter start-up); 60 % anchored on an event
        seen in the root (the run lock taken, a staging dir appearing, the release dir in place,
        the config switched), then a delay of up to 100 ms (a fifth of a shorter run): the windows
        where files change."""
        anchors = list(EVENTS[op])
        out: list[tuple[str | None, float]] = []
        for i in range(count):
            if i % 5 < 2:
                out.append((None, rng.uniform(0.0, self.durations[op])))
            else:
                # up to 100 ms, less for a short run: a late anchor plus a long delay kills nothing
                out.append((anchors[i % len(anchors)], rng.uniform(0.0, min(0.1, self.durations[op] / 5))))
        return out


def _release_entries(root: Path) -> list[str]:
    """Names under opt/nodeagent/<runtime>/, read while the run under test may be removing them
    (a directory that vanishes between listing and reading is simply gone)."""
    names = []
    opt = root / "opt/nodeagent"
    try:
        runtimes = [d for d in opt.iterdir() if d.is_dir()]
    except FileNotFoundError:
        return names
    for d in runtimes:
        try:
            names += [n.name for n in d.iterdir()]
        except FileNotFoundError:
            continue
    return names


def _any_temp(root: Path) -> bool:
    return any(n.startswith(TEMP_PREFIX) for n in _release_entries(root))


def _release_present(root: Path) -> bool:
    return any(not n.startswith(TEMP_PREFIX) for n in _release_entries(root))


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
    run_seconds: float = 0.0  # from start until the run exited or was killed


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


# state, download cache and the run lock are nodeagent's own bookkeeping, not the node's files
BOOKKEEPING = ("var/lib/nodeagent", "run")


def containerd_files(root: Path) -> dict[str, bytes]:
    """rel path -> bytes of every regular file under etc/containerd (config, drop-ins, runsc.toml)."""
    base = root / "etc/containerd"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file() and not p.is_symlink() and not p.name.startswith(TEMP_PREFIX)} if base.is_dir() else {}


def content(root: Path) -> dict[str, tuple]:
    """The root's files as (kind, mode, bytes or link target), nodeagent's bookkeeping aside.

    Files over 1 MB (the containerd binary, hard-linked into every root and never written by
    nodeagent) are named by inode and size: reading 50 MB per check would slow the kill runs."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if any(rel_dir == b or rel_dir.startswith(b + "/") for b in BOOKKEEPING):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel in BOOKKEEPING:
                continue
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), None)
            elif st.st_size > 1 << 20:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), ("inode", st.st_ino, st.st_size))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), Path(full).read_bytes())
    return out


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def check_bookkeeping(root: Path, ref: Reference, config_state: str) -> list[str]:
    """state.json, its backups and the files the config names agree with the config in effect.

    - a converged config is served only with every file it names converged too (runsc.toml: the
      runsc shim reads it per sandbox), and with state.json owning it (uninstall needs that);
    - every file state.json records holds its original bytes or the bytes it says we wrote;
    - every backup it names exists and holds that file's original bytes.
    """
    problems = []
    if config_state == "converged":
        for rel, data in ref.converged_files.items():
            if _read(root / rel) != data:
                problems.append(f"the config in effect is the new one but {rel} is not")
    try:
        raw = _read(root / STATE)
        records = {} if raw is None else json.loads(raw)["files"]
    except (ValueError, KeyError, TypeError) as exc:
        return problems + [f"state.json unreadable: {exc}"]
    if config_state == "converged" and "/" + CONFIG not in records:
        problems.append("the config in effect is the new one but state.json does not own it")
    for path, rec in records.items():
        rel = path.lstrip("/")
        if rel not in ref.original_files and rel not in ref.converged_files:
            continue  # not a file under etc/containerd: nothing to compare with
        original = ref.original_files.get(rel)
        now = _read(root / rel)
        if now != original and hashlib.sha256(now or b"").hexdigest() != rec.get("written_sha256"):
            problems.append(f"{rel} is neither its original bytes nor what state.json says was written")
        if rec.get("backup"):
            backup = _read(root / rec["backup"].lstrip("/"))
            if backup is None:
                problems.append(f"state.json names the backup {rec['backup']} of {rel}, which is missing")
            elif backup != original:
                problems.append(f"the backup {rec['backup']} does not hold {rel}'s original bytes")
        elif rec.get("created") is False:
            problems.append(f"state.json records no backup of {rel}, which existed before")
    return problems


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
    problems += check_bookkeeping(root, ref, state)
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


def _group_alive(pgid: int) -> list[int]:
    """PIDs of the group's members that are not zombies (a killed child may wait to be reaped)."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


def kill_group(pgid: int, timeout: float = 30) -> None:
    """SIGKILL a whole process group (nodeagent and its children: `containerd config dump`,
    systemctl ...) and wait until none of it runs, so nothing writes after the checks begin."""
    os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process group {pgid} still alive {timeout}s after SIGKILL: {_group_alive(pgid)}")
        time.sleep(0.005)


def kill_point(ref: Reference, op: str, anchor: str | None, delay: float, work: Path) -> KillResult:
    """One fresh root, one SIGKILL after `delay` seconds, the checks, the re-runs."""
    root = work / "root"
    copy_root(ref.template if op == "install" else ref.installed, root)
    tmp = work / "tmp"
    tmp.mkdir()
    ref.started[root] = time.time()
    started = time.monotonic()
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
        kill_group(proc.pid)
    _, err = proc.communicate(timeout=60)
    run_seconds = time.monotonic() - started
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
        # the recovered node uninstalls back to the original bytes, whatever the kill interrupted
        if op == "install":
            converge(root, "uninstall", ref.runtime)
        if content(root) != ref.uninstalled:
            problems.append("uninstall after the recovery did not restore the original bytes: "
                            + ", ".join(diff_snapshots(ref.uninstalled, content(root))[:8]))
    except Exception as exc:  # noqa: BLE001 - any failure to re-converge is what we are looking for
        problems.append(f"re-run failed: {type(exc).__name__}: {exc}")
    shutil.rmtree(work, ignore_errors=True)
    return KillResult(op, anchor, delay, killed, config_state, problems, run_seconds)


NO_KILL = 600.0  # a delay no run reaches: the point runs to its end


def calibrate(ref: Reference, base: Path, workers: int, ops: tuple[str, ...]) -> list[str]:
    """Measure each op's duration under the kills' own load: 2 x `workers` points per op run
    through kill_point, `workers` at a time, but never killed (runs timed one at a time look
    shorter, and the kills then bunch up early in the run). Returns their problems (a clean
    run is checked like any other)."""
    jobs = [op for op in ops for _ in range(2 * workers)]
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda ij: kill_point(ref, ij[1], None, NO_KILL, base / f"calibrate-{ij[0]:03d}"),
                                enumerate(jobs)))
    for op in ops:
        # the first quartile, not the median: a point drawn past the end of a run that happens to
        # be quick kills nothing (the run's last moments are covered by the anchored points)
        ref.durations[op] = statistics.quantiles([r.run_seconds for r in results if r.op == op], n=4)[0]
    return [f"{r.op} run to its end: {p}" for r in results for p in r.problems]


def run_campaign(base: Path, runtime: str, points: int, seed: int, workers: int = 4,
                 ops: tuple[str, ...] = ("install", "uninstall")) -> tuple[Reference, Tally]:
    """`points` kill points split over `ops`, seeded, run `workers` at a time."""
    ref = Reference.build(base / "ref", runtime)
    tally = Tally()
    tally.corruptions += calibrate(ref, base, workers, ops)
    rng = random.Random(seed)
    jobs = []
    per_op = [points // len(ops) + (1 if i < points % len(ops) else 0) for i in range(len(ops))]
    for op, count in zip(ops, per_op):
        jobs += [(op, anchor, d) for anchor, d in ref.points(op, count, rng)]
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(kill_point, ref, op, anchor, delay, base / f"point-{i:04d}")
                   for i, (op, anchor, delay) in enumerate(jobs)]
        for f in futures:
            tally.add(f.result())
    return ref, tally
