"""`nodeagent verify` (commands/verify.py): which runtimes are checked, the report, the exit code
and the hint, on fake roots. gVisor runs for real: Debian's runsc copied where nodeagent links it,
or a real script in its place that behaves like a broken runsc (starts nothing, or runs the
command on the host: a sandbox that is not one). Kata via CRI on a real containerd:
tests/integration/test_verify.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from nodeagent.commands.verify import VerifyFailed, failed_checks, run, run_checks
from nodeagent.errors import EXIT_OK, UsageError
from nodeagent.host import HostRoot
from nodeagent.settings import Settings
from nodeagent.verify import RuntimeCheck

RUNSC = Path("/usr/bin/runsc")
needs_runsc = pytest.mark.skipif(not RUNSC.exists(), reason="Debian's runsc is installed by scripts/setup-test-env")


_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")


def stdout(capsys) -> str:
    """What verify printed, without the debug log lines structlog writes to stdout in-process."""
    return "".join(line for line in capsys.readouterr().out.splitlines(keepends=True) if not _LOG_LINE.match(line))


def args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"image": None, "measure": None, "out": None, **kw})


def with_runsc(root: Path, script: str | None = None) -> Path:
    """/usr/local/bin/runsc under `root`: the real one, or a script (after `do`, it runs its body)."""
    (root / "usr/local/bin").mkdir(parents=True, exist_ok=True)
    dest = root / "usr/local/bin/runsc"
    if script is None:
        shutil.copy2(RUNSC, dest)
    else:
        dest.write_text('#!/bin/sh\nwhile [ "$1" != do ]; do shift; done; shift\n' + script + "\n")
        dest.chmod(0o755)
    return root


def test_all_on_an_empty_node_skips_both_with_reasons(tmp_path):
    checks = run_checks(Settings(root=str(tmp_path)), HostRoot(tmp_path))
    assert [(c.runtime, c.skipped, c.ok) for c in checks] == [("gvisor", True, False), ("kata", True, False)]
    assert "runsc not found under the host root" in checks[0].reason
    assert checks[1].reason == f"cannot ask containerd which handlers it serves: no socket at {tmp_path}/run/containerd/containerd.sock"
    assert failed_checks(checks) is None


def test_nothing_verified_fails_and_still_prints_the_report(tmp_path, capsys):
    with pytest.raises(VerifyFailed, match="nothing was verified") as e:
        run(Settings(root=str(tmp_path), output="json"), args())
    assert "nodeagent install" in e.value.hint
    report = json.loads(stdout(capsys))
    assert report["ok"] is False and set(report["runtimes"]) == {"gvisor", "kata"}


def test_naming_a_missing_runtime_fails_instead_of_skipping(tmp_path, capsys):
    with pytest.raises(VerifyFailed, match="gvisor: runsc not found") as e:
        run(Settings(root=str(tmp_path), runtime="gvisor"), args())
    assert e.value.hint == "install it: nodeagent install --runtime gvisor"
    assert stdout(capsys).startswith("gvisor  FAIL  runsc not found")
    (check,) = run_checks(Settings(root=str(tmp_path), runtime="gvisor"), HostRoot(tmp_path), explicit=False)
    assert check.skipped  # the agent's way: it has no --image and checks what is there


@needs_runsc
def test_a_real_gvisor_sandbox_passes(tmp_path):
    result = run(Settings(root=str(with_runsc(tmp_path)), runtime="gvisor"), args())
    assert result.exit_code == EXIT_OK and result.data["ok"] is True
    gvisor = result.data["runtimes"]["gvisor"]
    assert gvisor["ok"] and gvisor["sandbox_kernel"] != os.uname().release and gvisor["dmesg"]
    first = result.text.splitlines()[0]
    assert first.startswith(f"gvisor  ok    sandbox kernel {gvisor['sandbox_kernel']} (host ") and first.endswith("via runsc do")
    assert "dmesg: " in result.text


@needs_runsc
def test_all_passes_when_the_installed_runtime_passes_and_the_other_is_skipped(tmp_path):
    result = run(Settings(root=str(with_runsc(tmp_path))), args())
    assert result.data["ok"] is True and result.data["runtimes"]["kata"]["skipped"] is True
    assert "\nkata    skip  cannot ask containerd" in result.text


def test_a_sandbox_showing_the_host_kernel_is_not_isolated(tmp_path, capsys):
    root = with_runsc(tmp_path, 'exec "$@"')  # runs `uname -r` on the host itself
    with pytest.raises(VerifyFailed, match="gvisor: the sandbox reports the host's own kernel") as e:
        run(Settings(root=str(root), runtime="gvisor"), args())
    assert "runtime_type and shim" in e.value.hint
    out = stdout(capsys)
    assert out.startswith(f"gvisor  FAIL  sandbox kernel {os.uname().release} (host {os.uname().release})")


def test_a_runsc_that_cannot_start_a_sandbox(tmp_path, capsys):
    root = with_runsc(tmp_path, 'echo "cannot create sandbox: operation not permitted" >&2; exit 1')
    with pytest.raises(VerifyFailed, match="gvisor: gVisor could not start a sandbox") as e:
        run(Settings(root=str(root), runtime="gvisor", output="json"), args())
    assert e.value.hint == "run `runsc --network=none do uname -r` on the node to see why gVisor cannot start"
    assert json.loads(stdout(capsys))["runtimes"]["gvisor"]["ok"] is False


def test_kata_named_without_containerd_points_at_its_log(tmp_path):
    with pytest.raises(VerifyFailed, match="kata: cannot ask containerd") as e:
        run(Settings(root=str(tmp_path), runtime="kata"), args(image="busybox"))
    assert "journalctl -u containerd" in e.value.hint


def test_a_bad_measure_count_is_refused_before_any_check(tmp_path):
    root = with_runsc(tmp_path, f'touch {tmp_path}/ran; exec "$@"')
    with pytest.raises(UsageError, match="--measure 0"):
        run(Settings(root=str(root), runtime="gvisor"), args(measure=0))
    assert not (tmp_path / "ran").exists()


def test_failed_checks_lists_what_ran_and_failed():
    checks = [RuntimeCheck("gvisor", "runsc-do", ok=False, reason="r1"),
              RuntimeCheck("kata", "cri", skipped=True, reason="r2"),
              RuntimeCheck("x", "cri", ok=True)]
    assert failed_checks(checks) == "gvisor: r1"
    assert failed_checks(checks[1:]) is None
