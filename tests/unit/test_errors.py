"""errors: every known failure carries a hint and an exit code; a failed command says what ran
and the last line it printed (the line an operator needs), never the whole stderr."""

from __future__ import annotations

import pytest

from nodeagent import errors


@pytest.mark.parametrize("cls, code", [
    (errors.NodeagentError, 2), (errors.UsageError, 64), (errors.HostError, 2), (errors.LockHeld, 3),
    (errors.ConfigError, 2), (errors.ConflictError, 2), (errors.ArtifactError, 2), (errors.KubeError, 2),
])
def test_each_kind_has_its_exit_code_and_a_default_hint(cls, code):
    exc = cls("what happened")
    assert exc.exit_code == code and exc.message == str(exc) == "what happened"
    assert exc.hint == cls.default_hint and exc.hint
    assert cls("x", "do this").hint == "do this"


def test_a_failed_command_names_the_command_and_its_last_stderr_line():
    exc = errors.CommandFailed(["containerd", "--config", "/x.toml", "config", "dump"], 1,
                               "level=info msg=starting\nfailed to load: bad key\n\n", "fix the file")
    assert exc.message == "`containerd --config /x.toml` exited 1: failed to load: bad key"
    assert exc.hint == "fix the file" and exc.returncode == 1 and exc.argv[-1] == "dump"
    assert errors.CommandFailed(["runsc", "--version"], None, "").message == "`runsc --version` timed out"
    assert isinstance(errors.CommandFailed(["x"], 2, ""), errors.NodeagentError)
