#!/usr/bin/python
"""Ansible module: run `nodeagent install` (or `plan` in check mode) and report what it did.

Why a module instead of `command` + `changed_when`: check mode must run `nodeagent plan` against
the settings the play *would* write, diff mode must show nodeagent's own per-file diffs, and a
failure must surface nodeagent's `error:`/`hint:` lines. A module does all three in one task.
"""

from __future__ import annotations

import json
import os
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: nodeagent_converge
short_description: Converge a node with nodeagent (install runtimes, register containerd handlers)
description:
  - Runs C(nodeagent -o json install) and reports C(changed) from nodeagent's own JSON result.
  - In check mode runs C(nodeagent -o json plan) instead, which writes nothing.
  - In diff mode returns nodeagent's unified diff for every file it changes or would change.
  - Fails with nodeagent's C(error:) and C(hint:) lines when nodeagent exits non-zero.
options:
  executable:
    description: Path of the nodeagent console script.
    type: path
    required: true
  config:
    description: Settings file nodeagent reads (C(--config)).
    type: path
    required: true
  config_text:
    description:
      - The settings the play writes to I(config). Check mode plans against this text (in a
        private temporary file) so the plan reflects the new settings, not the old file.
    type: str
  extra_args:
    description: More arguments for the install/plan command (e.g. C(--health-timeout 30)).
    type: list
    elements: str
    default: []
  mode:
    description:
      - C(install) converges (C(plan) in check mode). C(plan) only plans, against I(config_text)
        when given: the role runs it first so bad settings fail before anything is written.
    type: str
    choices: [install, plan]
    default: install
  lock_wait:
    description:
      - Seconds to keep retrying while another nodeagent (e.g. the agent service converging)
        holds the run lock (exit 3).
    type: int
    default: 120
author: nodeagent maintainers
"""

RETURN = r"""
result:
  description: nodeagent's JSON result (keys changed, restart, files, artifacts).
  type: dict
  returned: when nodeagent ran
restart:
  description: Whether containerd was (or would be) restarted.
  type: bool
  returned: when nodeagent ran
error:
  description: nodeagent's C(error:) line on failure.
  type: str
  returned: failure
hint:
  description: nodeagent's C(hint:) line on failure.
  type: str
  returned: failure
"""


EXIT_LOCKED = 3  # another nodeagent holds /run/nodeagent.lock


def _prefixed_line(text: str, prefix: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    return None


def _diffs(files: list[dict]) -> list[dict]:
    """Ansible's diff format (`prepared` = an already rendered unified diff) per changed file."""
    out = []
    for entry in files:
        if entry.get("action", "none") == "none" or not entry.get("diff"):
            continue
        out.append({"prepared": entry["diff"].rstrip("\n") + "\n"})
    return out


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "executable": {"type": "path", "required": True},
            "config": {"type": "path", "required": True},
            "config_text": {"type": "str"},
            "extra_args": {"type": "list", "elements": "str", "default": []},
            "mode": {"type": "str", "choices": ["install", "plan"], "default": "install"},
            "lock_wait": {"type": "int", "default": 120},
        },
        supports_check_mode=True,
    )
    executable = module.params["executable"]
    config = module.params["config"]
    verb = "plan" if module.check_mode or module.params["mode"] == "plan" else "install"

    if not os.access(executable, os.X_OK):
        if module.check_mode:
            # A first run in check mode: nodeagent itself is not installed yet, so it cannot plan.
            module.exit_json(changed=True, msg=f"{executable} is not installed yet; a real run would install and converge")
        module.fail_json(msg=f"{executable} is not executable", hint="install nodeagent into the virtualenv first")

    if verb == "plan" and module.params["config_text"] is not None:
        config = os.path.join(module.tmpdir, "nodeagent-config.toml")
        with open(config, "w", encoding="utf-8") as fh:
            fh.write(module.params["config_text"])

    argv = [executable, "--config", config, "-o", "json", verb, *module.params["extra_args"]]
    # Logs as JSON lines on stderr keep the error:/hint: lines easy to pick out.
    env = {"NODEAGENT_LOG_FORMAT": "json"}
    deadline = time.monotonic() + module.params["lock_wait"]
    while True:
        rc, stdout, stderr = module.run_command(argv, environ_update=env)
        if rc != EXIT_LOCKED or time.monotonic() >= deadline:
            break
        time.sleep(1)
    if rc != 0:
        error = _prefixed_line(stderr, "error:")
        hint = _prefixed_line(stderr, "hint:")
        summary = f"nodeagent {verb} failed (exit {rc}): {error or stderr.strip()[-400:] or 'no message'}"
        if hint:
            summary += f"; hint: {hint}"
        module.fail_json(msg=summary, rc=rc, cmd=argv, stdout=stdout, stderr=stderr, error=error, hint=hint)

    try:
        result = json.loads(stdout)
    except ValueError:
        module.fail_json(msg=f"nodeagent {verb} printed no JSON result", rc=rc, cmd=argv, stdout=stdout, stderr=stderr)
    if not isinstance(result, dict) or "changed" not in result:
        module.fail_json(msg=f"nodeagent {verb} result has no 'changed' key", rc=rc, cmd=argv, stdout=stdout)

    response = {
        "changed": bool(result["changed"]),
        "restart": bool(result.get("restart", False)),
        "result": result,
        "cmd": argv,
        "rc": rc,
    }
    if module._diff:
        response["diff"] = _diffs(result.get("files") or [])
    module.exit_json(**response)


if __name__ == "__main__":
    main()
