"""`verify --measure` (commands/verify_measure.py): which runtimes are measured, the reasons for the
others, the report written with --out. gVisor is measured for real with Debian's runsc; the
verify checks handed in are real `verify.RuntimeCheck` objects as `verify` fills them.
The CLI end to end: tests/integration/test_verify.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodeagent.commands.verify_measure import check_count, measure_checked
from nodeagent.errors import NodeagentError, UsageError
from nodeagent.host import HostRoot
from nodeagent.measure import MAX_SANDBOXES
from nodeagent.settings import Settings
from nodeagent.verify import RuntimeCheck

RUNSC = Path("/usr/bin/runsc")


@pytest.mark.parametrize("count", [0, -1, MAX_SANDBOXES + 1])
def test_a_count_outside_one_to_max_is_a_usage_error(count):
    with pytest.raises(UsageError, match=f"--measure {count}: the number of sandboxes must be 1 to {MAX_SANDBOXES}"):
        check_count(count)


@pytest.mark.parametrize("count", [1, MAX_SANDBOXES])
def test_the_bounds_are_accepted(count):
    check_count(count)


def not_verified(runtime: str, reason: str, skipped: bool = True) -> RuntimeCheck:
    return RuntimeCheck(runtime, "cri" if runtime == "kata" else "runsc-do", skipped=skipped, reason=reason)


def test_unverified_runtimes_are_skipped_with_verifys_reason_and_detections(tmp_path):
    """An empty root: no KVM or host-side vsock facts, so detection says Kata cannot run here."""
    data: dict = {}
    text = measure_checked(HostRoot(tmp_path), Settings(root=str(tmp_path)),
                           [not_verified("kata", "no socket at /run/containerd/containerd.sock"),
                            not_verified("gvisor", "the sandbox reports the host's own kernel", skipped=False)],
                           1, data, None)
    kata, gvisor = data["measure"]["kata"], data["measure"]["gvisor"]
    assert kata["skipped"] and kata["reason"].startswith("no socket at /run/containerd/containerd.sock; "
                                                         "kata cannot run on this host: ")
    assert gvisor["skipped"] and gvisor["reason"].startswith("the sandbox reports the host's own kernel")
    assert set(data["measure_host"]) == {"load_average_1m", "cpus", "measured_at"}
    lines = text.splitlines()
    assert lines[0].startswith("kata    measure skipped: no socket at")
    assert lines[-1].startswith("measured on a host with load ") and "report written" not in lines[-1]


@pytest.mark.skipif(not RUNSC.exists(), reason="Debian's runsc is installed by scripts/setup-test-env")
def test_a_verified_gvisor_is_measured_and_the_report_written(tmp_path):
    check = RuntimeCheck("gvisor", "runsc-do", ok=True, detail={"runsc": str(RUNSC)})
    out = tmp_path / "report.json"
    data = {"ok": True}
    text = measure_checked(HostRoot(tmp_path), Settings(root=str(tmp_path)), [check], 1, data, str(out))
    gvisor = data["measure"]["gvisor"]
    assert gvisor["sandboxes"] == 1 and gvisor["method"] == "runsc-do" and gvisor["recommended"]["memory"].endswith("Mi")
    assert json.loads(out.read_text()) == data  # the whole report, as stdout's JSON
    assert text.endswith(f"; report written to {out}") and "recommended overhead.podFixed" in text


def test_missing_directories_of_out_are_made(tmp_path):
    measure_checked(HostRoot(tmp_path), Settings(root=str(tmp_path)), [not_verified("gvisor", "not installed")],
                    1, {}, str(tmp_path / "no/such/dir/report.json"))
    assert json.loads((tmp_path / "no/such/dir/report.json").read_text())["measure"]["gvisor"]["skipped"] is True


def test_an_unwritable_out_is_a_clear_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(NodeagentError, match="cannot write .*/a-file/report.json") as e:
        measure_checked(HostRoot(tmp_path), Settings(root=str(tmp_path)), [not_verified("gvisor", "not installed")],
                        1, {}, str(tmp_path / "a-file/report.json"))
    assert e.value.hint == "pass --out a writable path"
