"""`measure_launch`: starting the sandboxes `verify --measure` samples, finding their processes,
ending them. Real gVisor sandboxes with Debian's runsc (`runsc do`); the failure paths with real
executables that behave like a broken runsc. Many sandboxes and the CRI way on a real containerd:
tests/integration/test_verify.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from nodeagent.measure import MeasureError
from nodeagent.measure_launch import measure_cri, measure_runsc_do, shim_of, skipped
from tests.support.wait import wait_for

RUNSC = Path("/usr/bin/runsc")


def leftovers(marker: str) -> list[str]:
    """Processes whose command line mentions `marker` (a state dir or a test's own path)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if marker in cmdline:
            out.append(f"{p.pid}: {cmdline}")
    return out


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it has ended)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def fake_runsc(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "runsc"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


@pytest.mark.skipif(not RUNSC.exists(), reason="Debian's runsc is installed by scripts/setup-test-env")
def test_a_real_gvisor_sandbox_is_measured_and_ended():
    m = measure_runsc_do(RUNSC, 1, platform="ptrace", window=0.3, timeout=60)  # bookworm's runsc: no systrap
    assert (m.runtime, m.method, m.sandboxes, m.window) == ("gvisor", "runsc-do", 1, 0.3)
    assert m.detail == {"runsc": str(RUNSC), "platform": "ptrace"}
    names = {p["name"] for p in m.costs[0].processes}
    assert "runsc-sandbox" in names and "runsc-gofer" in names, names  # the Sentry and the Gofer
    assert m.costs[0].rss > 1 << 20
    assert leftovers("nodeagent-measure-") == []  # no sandbox outlives the measurement


def test_a_runsc_that_fails_says_why_from_its_stderr(tmp_path):
    runsc = fake_runsc(tmp_path, 'echo "starting" >&2; echo "creating container: permission denied" >&2; exit 128')
    with pytest.raises(MeasureError, match=r"`runsc do` exited 128 before its sandbox started: "
                                           r"creating container: permission denied"):
        measure_runsc_do(runsc, 2, window=0.1, timeout=10)
    assert leftovers(str(tmp_path)) == []


def test_a_sandbox_that_never_starts_times_out_and_is_ended(tmp_path):
    runsc = fake_runsc(tmp_path, "exec sleep 600")
    with pytest.raises(MeasureError, match="the gVisor sandbox did not start in time") as e:
        measure_runsc_do(runsc, 2, window=0.1, timeout=1)
    assert "--health-timeout" in e.value.hint
    assert leftovers("nodeagent-measure-") == []


def test_the_workload_runs_below_runsc_and_ends_with_it(tmp_path):
    """The ready line comes from the workload; this runsc runs it as its child and ends it on
    SIGTERM, as the real one does."""
    runsc = fake_runsc(tmp_path, 'shift $(($# - 3)); "$@" & trap \'kill $!; exit 0\' TERM; wait')
    m = measure_runsc_do(runsc, 1, window=0.1, timeout=10)
    assert m.sandboxes == 1
    assert [p["name"] for p in m.costs[0].processes] == ["sleep"]  # sh exec'd sleep below "runsc"
    assert leftovers(str(tmp_path)) == []
    wait_for(lambda: not alive(m.costs[0].processes[0]["pid"]), 10, "the workload to end with its runtime")


def test_a_line_before_the_ready_line_in_the_same_chunk(tmp_path):
    """One write holding a banner line and the ready line: a buffered readline() would keep the
    ready line in Python's buffer while select() waited for bytes that never come."""
    runsc = fake_runsc(tmp_path, "printf 'runsc: some banner\\nnodeagent-measure-ready\\n'; exec sleep 600")
    m = measure_runsc_do(runsc, 1, window=0.1, timeout=3)
    assert m.sandboxes == 1


def test_a_ready_line_split_across_two_writes(tmp_path):
    runsc = fake_runsc(tmp_path, "printf 'nodeagent-mea'; sleep 0.3; printf 'sure-ready\\n'; exec sleep 600")
    m = measure_runsc_do(runsc, 1, window=0.1, timeout=10)
    assert m.sandboxes == 1


def left_behind_ends(runsc: Path, pids: Path) -> None:
    """Measure with `runsc`, which leaves a process behind when it exits (its pid in `pids`);
    that process must end with the measurement. Killed here if it does not (ours: the test's)."""
    try:
        measure_runsc_do(runsc, 1, window=0.1, timeout=10)
        child = int(pids.read_text())
        wait_for(lambda: not alive(child), 3, "the process runsc do left behind to end")
    finally:
        if pids.exists() and pids.read_text().strip() and alive(int(pids.read_text())):
            os.kill(int(pids.read_text()), signal.SIGKILL)


def test_nothing_of_the_session_outlives_the_measurement(tmp_path):
    pids = tmp_path / "pids"
    left_behind_ends(fake_runsc(tmp_path, f'shift $(($# - 3)); "$@" & echo $! > {pids}; wait'), pids)  # SIGTERM ends only sh


def test_a_process_started_as_runsc_do_exits_is_ended(tmp_path):
    """Born after the sandbox's processes were noted, in runsc do's process group: only the
    killpg of that group (done while runsc do is unreaped, so its id is still ours) reaches it."""
    pids = tmp_path / "pids"
    runsc = fake_runsc(tmp_path, f'shift $(($# - 3)); "$@" & w=$!; '
                                 f"trap 'kill $w; sleep 600 & echo $! > {pids}; exit 0' TERM; wait")
    left_behind_ends(runsc, pids)


@pytest.mark.skipif(not Path("/usr/bin/setsid").exists(), reason="needs setsid(1) (util-linux)")
def test_a_sandbox_process_in_a_session_of_its_own_is_ended(tmp_path):
    """runsc starts its sandbox in a new session (out of reach of a killpg): the processes noted
    below runsc do are ended one by one."""
    pids = tmp_path / "pids"
    runsc = fake_runsc(tmp_path, f'shift $(($# - 3)); setsid "$@" & echo $! > {pids}; wait')
    left_behind_ends(runsc, pids)


def test_shim_of_finds_the_shim_serving_a_sandbox_id(tmp_path):
    sandbox = "5e1f" * 16
    shim = subprocess.Popen(["/x/containerd-shim-fake-v2", "-c", "import time; time.sleep(60)", "-id", sandbox],
                            executable=sys.executable)
    other = subprocess.Popen(["not-a-shim", "-c", "import time; time.sleep(60)", "-id", sandbox + "0"],
                             executable=sys.executable)
    try:
        found = shim_of(sandbox)
        assert found is not None and found.pid == shim.pid
        assert shim_of(sandbox + "0") is None  # that process is not a shim
        assert shim_of("no-such-sandbox") is None
    finally:
        for p in (shim, other):
            p.kill()
            p.wait()


def test_cri_without_containerd_is_a_measure_error(tmp_path):
    sock = tmp_path / "containerd.sock"
    with pytest.raises(MeasureError, match="no sandbox with handler 'kata': containerd does not answer"):
        measure_cri("kata", "kata", str(sock), 1, window=0.1, timeout=5)


def test_skipped_carries_the_reason():
    m = skipped("kata", "cri", "not verified")
    assert (m.skipped, m.reason, m.sandboxes) == (True, "not verified", 0)
    assert m.as_dict()["skipped"] is True and "recommended" not in m.as_dict()
