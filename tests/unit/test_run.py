"""run: the one way nodeagent starts a subprocess. Real binaries: a failure carries the command,
its exit code and stderr; a binary run only to learn about it runs as nobody, without
capabilities and offline."""

from __future__ import annotations

import os
import shutil

import pytest

from nodeagent.errors import CommandFailed
from nodeagent.run import NOBODY, run, unprivileged


def test_output_is_text_and_never_goes_through_a_shell():
    proc = run(["/bin/echo", "$HOME; ls"])
    assert proc.returncode == 0 and proc.stdout == "$HOME; ls\n"


def test_a_failure_names_the_command_its_code_and_last_stderr_line():
    with pytest.raises(CommandFailed) as exc:
        run(["/bin/sh", "-c", "echo starting >&2; echo 'no such key' >&2; exit 3"], hint="fix it")
    assert exc.value.returncode == 3 and exc.value.message == "`/bin/sh -c echo starting >&2; echo 'no such key' >&2; exit 3` exited 3: no such key"
    assert exc.value.hint == "fix it"
    assert run(["/bin/sh", "-c", "exit 3"], check=False).returncode == 3


def test_missing_binary_timeout_and_a_non_executable_are_known_errors(tmp_path):
    with pytest.raises(CommandFailed) as missing:
        run([str(tmp_path / "nope")])
    assert missing.value.returncode == 127
    with pytest.raises(CommandFailed) as slow:
        run(["/bin/sleep", "5"], timeout=0.2)
    assert slow.value.returncode is None and "timed out" in slow.value.message
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    with pytest.raises(CommandFailed) as denied:
        run([str(plain)])
    assert denied.value.returncode == 126


def test_input_env_and_cwd_reach_the_child(tmp_path):
    proc = run(["/bin/sh", "-c", 'cat; echo "$X"; pwd'], input=b"in\n", env={"X": "y", "PATH": "/bin"}, cwd=str(tmp_path))
    assert proc.stdout == f"in\ny\n{tmp_path}\n"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("unshare"),
                    reason="as_nobody drops root: needs root and util-linux's setpriv/unshare")
def test_as_nobody_runs_without_privileges_and_offline():
    proc = run(["/bin/sh", "-c", "id -u; id -g; id -G; grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status;"
                "cat /proc/net/dev | tail -n +3 | cut -d: -f1; pwd; echo \"$PATH\""], as_nobody=True)
    lines = [line.strip() for line in proc.stdout.splitlines()]
    assert lines[:3] == [str(NOBODY), str(NOBODY), str(NOBODY)]  # no supplementary groups either
    caps = dict(line.split(":\t") for line in lines[3:6])
    assert caps["CapEff"] == caps["CapPrm"] == "0000000000000000" and caps["NoNewPrivs"] == "1"
    # CapBnd is full again: `unshare --user` gives the child a new user namespace with its own bounding
    # set (over that namespace only); no_new_privs and uid nobody keep any exec from gaining a capability
    assert lines[6:-2] == ["lo"]  # a new network namespace: only its loopback
    assert lines[-2:] == ["/", "/usr/sbin:/usr/bin:/sbin:/bin"]
    assert unprivileged(["x"])[-1] == "x"
