"""converge: the install/uninstall pipeline on fake roots, fast.

Each root holds a real-world config and the REAL containerd binary of its series (hard-linked
in, listed in the root's dpkg database, so detection reads its version as on a node), so the
candidate config is judged by that containerd's `config dump`. No containerd runs in the root
and `--restart none` is set: what a restart and the CRI health wait do is proven on running
daemons in tests/integration (test_install_node.py, test_systemd_node.py). Artifacts come from
the suite's default mirror (Debian's real runsc; stand-in shims, see tests/support/mirror.py).
"""

from __future__ import annotations

import contextlib
import json
import os

import pytest

from nodeagent import converge, state
from nodeagent.containerd.plan import FileChange
from nodeagent.errors import ArtifactError, ConfigError
from nodeagent.fsutil import TEMP_PREFIX
from nodeagent.settings import Settings
from tests.support.mirror import default_mirror
from tests.support.scenarios import CORPUS, OURS, have_containerd, install_containerd
from tests.support.tree import diff_snapshots, snapshot

CONFIG = "etc/containerd/config.toml"


def node(tmp_path, series: str, config: bytes) -> os.PathLike:
    """A fake root: containerd `series` (real binary) and its config; nothing running."""
    if not have_containerd(series):
        pytest.skip(f"containerd {series} is not installed here (scripts/setup-test-env)")
    root = tmp_path / "root"
    (root / CONFIG).parent.mkdir(parents=True)
    (root / CONFIG).write_bytes(config)
    install_containerd(root, series)
    return root


def settings(root, **over) -> Settings:
    over.setdefault("mirror", str(default_mirror()))
    over.setdefault("restart", "none")
    over.setdefault("skip_eligibility", True)  # the fake root has no /proc, /sys: eligibility is unknown
    return Settings(root=str(root), **over)


PLANS = {  # series, config -> the files an install would change
    ("1.7", OURS / "default-1.7.toml"): [("/etc/containerd/config.toml", "modify"), ("/etc/containerd/runsc.toml", "create")],
    # a v3 config: our handlers go into a drop-in, and the config gains the import of it
    ("2.1", CORPUS / "eks-nodeadm-nvidia-v3.toml"): [("/etc/containerd/conf.d/90-nodeagent.toml", "create"),
                                                     ("/etc/containerd/config.toml", "modify"),
                                                     ("/etc/containerd/runsc.toml", "create")],
}


@pytest.mark.parametrize("series, config", sorted(PLANS))
def test_plan_lists_the_change_and_writes_nothing(tmp_path, series, config):
    root = node(tmp_path, series, config.read_bytes())
    before = snapshot(root)
    report = converge.plan(settings(root))
    assert diff_snapshots(before, snapshot(root)) == []
    data = report.to_json()
    assert data["changed"] is True and data["restart"] is False  # nothing runs: nothing to restart
    assert data["runtimes"] == ["gvisor", "kata"] and "runsc" in data["handlers"] and "kata" in data["handlers"]
    assert [(f["path"], f["action"]) for f in data["files"]] == PLANS[series, config]
    assert {a["runtime"]: a["action"] for a in data["artifacts"]} == {"gvisor": "download", "kata": "download"}
    assert converge.NOT_RUNNING_NOTE in data["notes"]
    json.dumps(data)  # the contract's JSON: serialisable as is


def test_install_writes_config_artifacts_and_state_then_a_rerun_changes_nothing(tmp_path):
    root = node(tmp_path, "1.7", (OURS / "default-1.7.toml").read_bytes())
    original = (root / CONFIG).read_bytes()
    first = converge.install(settings(root))
    assert first.changed and not first.restart and not first.restart_pending
    text = (root / CONFIG).read_text()
    assert text.startswith(original.decode())  # the operator's bytes stay; ours are appended
    assert 'runtime_type = "io.containerd.runsc.v1"' in text and 'runtime_type = "io.containerd.kata.v2"' in text
    assert os.readlink(root / "usr/local/bin/runsc").startswith("/opt/nodeagent/gvisor/")
    assert (root / "usr/local/bin/containerd-shim-kata-v2").is_symlink()
    recorded = json.loads((root / state.STATE_FILE.lstrip("/")).read_text())
    assert set(recorded["handlers"]) >= {"runsc", "kata"}

    before = snapshot(root)
    again = converge.install(settings(root))
    assert not again.changed and again.to_json()["files"] == []
    assert {a["action"] for a in again.artifacts} == {"none"}
    assert set(diff_snapshots(before, snapshot(root))) <= {"changed run/nodeagent.lock (mtime)"}  # the lock only


def test_uninstall_gives_back_the_original_bytes_and_removes_the_artifacts(tmp_path):
    root = node(tmp_path, "2.1", (CORPUS / "kind-node-v2.toml").read_bytes())
    original = (root / CONFIG).read_bytes()
    converge.install(settings(root))
    # force: the in-use check matches host-absolute /opt/nodeagent/... paths, and other tests on this
    # machine run runsc from there inside their systemd nodes; the restore is the same either way
    report = converge.uninstall(settings(root, force=True))
    assert report.changed and not report.restart
    assert (root / CONFIG).read_bytes() == original
    assert {a["runtime"] for a in report.artifacts} == {"gvisor", "kata"}
    assert not (root / "usr/local/bin/runsc").exists() and not (root / "opt/nodeagent/gvisor").exists()


def test_a_config_the_real_containerd_rejects_is_refused_before_anything_is_written(tmp_path):
    """Valid TOML the planner accepts, but containerd 1.7's `config dump` refuses the type of oom_score."""
    root = node(tmp_path, "1.7", b'version = 2\noom_score = "high"\n')
    before = snapshot(root)
    with pytest.raises(ConfigError, match="containerd rejects the planned config") as exc:
        converge.install(settings(root))
    assert exc.value.hint
    # the run lock is taken before validation: its file (on a node's /run tmpfs, holding no state) is
    # the only trace; no config, artifact, backup or state
    assert set(diff_snapshots(before, snapshot(root))) <= {"added run", "added run/nodeagent.lock"}


def test_an_install_no_containerd_could_validate_says_so(tmp_path):
    root = tmp_path / "root"  # a config, but no containerd binary in the root to judge it
    (root / CONFIG).parent.mkdir(parents=True)
    (root / CONFIG).write_bytes((OURS / "default-1.7.toml").read_bytes())
    report = converge.install(settings(root))
    assert any("not validated" in note for note in report.notes), report.notes


def test_bad_settings_are_refused_before_the_lock_file_exists(tmp_path):
    root = node(tmp_path, "1.7", (OURS / "default-1.7.toml").read_bytes())
    before = snapshot(root)
    with pytest.raises(ArtifactError, match="invalid gvisor version"):
        converge.install(settings(root, gvisor_version="../../etc"))
    assert diff_snapshots(before, snapshot(root)) == []


def test_install_sweeps_temp_files_a_killed_run_left(tmp_path):
    root = node(tmp_path, "1.7", (OURS / "default-1.7.toml").read_bytes())
    leftover = root / "etc/containerd" / f"{TEMP_PREFIX}config.toml.12345"
    leftover.write_text("half a config from a SIGKILLed run\n")
    converge.install(settings(root))
    assert not leftover.exists()
    assert sorted(p.name for p in (root / "etc/containerd").iterdir() if p.name.startswith(TEMP_PREFIX)) == []


def test_the_fleet_slot_is_not_taken_when_no_restart_is_needed(tmp_path):
    """restart_guard (a Lease slot in the agent) is held only around a real restart: here nothing
    runs, so install must not queue for a slot it does not need."""
    root = node(tmp_path, "1.7", (OURS / "default-1.7.toml").read_bytes())
    taken = []

    @contextlib.contextmanager
    def guard():
        taken.append(True)
        yield

    assert converge.install(settings(root, restart="auto"), restart_guard=guard).changed
    assert taken == []


def test_report_json_and_text_show_only_what_changes():
    report = converge.Report(
        changed=True, restart=False, restart_pending=True, runtimes=["gvisor"], handlers=["runsc"],
        files=[FileChange("/etc/containerd/config.toml", "config", b"version = 2\n", b"version = 2\n# runsc\n"),
               FileChange("/etc/containerd/runsc.toml", "runsc", b"x", b"x")],
        artifacts=[{"runtime": "gvisor", "version": "20240729.0", "action": "install"}],
        notes=["a note"], warnings=["a warning"],
    )
    data = report.to_json()
    assert [f["path"] for f in data["files"]] == ["/etc/containerd/config.toml"]
    assert "restarted" not in data and "health" not in data
    assert data["notes"] == ["a note"] and data["warnings"] == ["a warning"]
    text = report.render_text()
    assert "+# runsc" in text and "modify  /etc/containerd/config.toml" in text and "runsc.toml" not in text
    assert "changed: yes; containerd restart: pending (--restart none)" in text
    assert "install   gvisor 20240729.0" in text
    assert text.endswith("note: a note\nwarning: a warning")
    assert "warnings" not in converge.Report().to_json() and "notes" not in converge.Report().to_json()
