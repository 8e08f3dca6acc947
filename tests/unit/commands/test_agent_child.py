"""commands.agent_child: the protocol between the resident agent and its one-round child (settings in
as JSON, one JSON line out), how each kind of failure comes back, and that a stop signal does not cut
a round. Every root here is under tmp_path; converging for real in a child is
tests/integration/test_agent_child.py's job."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nodeagent.commands.agent_child import BUG_HINT, ChildError, run_in_child
from nodeagent.settings import Settings

REPO = Path(__file__).resolve().parents[3]
CHILD = [sys.executable, "-m", "nodeagent.commands.agent_child"]


def settings(tmp_path, **kw) -> Settings:
    kw.setdefault("root", str(tmp_path / "no-such-root"))
    return Settings(runtime="gvisor", restart="none", skip_eligibility=True, log_format="json", **kw)


def test_a_known_failure_comes_back_with_its_message_hint_and_exit_code(tmp_path):
    with pytest.raises(ChildError) as err:
        run_in_child(settings(tmp_path))
    assert err.value.message == f"host root '{tmp_path / 'no-such-root'}' does not exist or is not a directory"
    assert "--root" in err.value.hint
    assert (err.value.exit_code, err.value.rolled_back, err.value.rollout_halted) == (2, False, False)


def test_a_bug_in_the_round_is_reported_as_unexpected_with_the_bug_hint(tmp_path):
    with pytest.raises(ChildError) as err:
        run_in_child(settings(tmp_path, root=12345))  # not a path: HostRoot raises TypeError
    assert err.value.message.startswith("unexpected TypeError: ")
    assert err.value.hint == BUG_HINT and err.value.exit_code == 2


def test_a_child_that_dies_before_answering_is_a_failure_not_a_crash(tmp_path, capfd):
    with pytest.raises(ChildError) as err:
        run_in_child(settings(tmp_path, verbosity="loud"))  # logging setup fails before the round
    assert err.value.message == "the converge child exited 1 without a result"
    assert err.value.hint == BUG_HINT and not err.value.rolled_back
    assert "TypeError" in capfd.readouterr().err, "the child's traceback reaches the agent's stderr"


def child(payload: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(CHILD, input=payload, text=True, capture_output=True, cwd=REPO, timeout=60, **kw)


def test_the_child_answers_one_json_line_and_exits_with_the_errors_code(tmp_path):
    proc = child(json.dumps(dataclasses.asdict(settings(tmp_path))))
    lines = proc.stdout.splitlines()
    assert proc.returncode == 2 and len(lines) == 1
    error = json.loads(lines[0])["error"]
    assert set(error) == {"message", "hint", "exit_code", "rolled_back", "rollout_halted"}
    assert error["exit_code"] == 2 and error["rolled_back"] is False


def test_the_child_refuses_settings_it_does_not_know(tmp_path):
    payload = {**dataclasses.asdict(settings(tmp_path)), "no_such_setting": 1}
    proc = child(json.dumps(payload))
    assert proc.returncode != 0 and proc.stdout == "" and "no_such_setting" in proc.stderr


def sig_ignored(pid: int, signum: int) -> bool:
    with open(f"/proc/{pid}/status") as fh:
        mask = next(int(line.split()[1], 16) for line in fh if line.startswith("SigIgn:"))
    return bool(mask & (1 << (signum - 1)))


def test_a_stop_signal_does_not_cut_a_round(tmp_path):
    proc = subprocess.Popen(CHILD, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while not (sig_ignored(proc.pid, signal.SIGTERM) and sig_ignored(proc.pid, signal.SIGINT)):
            assert time.monotonic() < deadline and proc.poll() is None, "the child never ignored stop signals"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(json.dumps(dataclasses.asdict(settings(tmp_path))), timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2 and "error" in json.loads(out.splitlines()[-1])
