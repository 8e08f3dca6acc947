"""Static checks of the deployment files: ansible-lint, Ansible syntax, the Vagrantfile's Ruby."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed (pip install -e '.[test]', see scripts/setup-test-env)")
    return str(path)


def _env(tmp_path: Path) -> dict[str, str]:
    # a private HOME: ansible-lint caches collections and schemas there
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(HOME=str(tmp_path), ANSIBLE_NOCOLOR="1", NO_COLOR="1", ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"))
    return env


def test_ansible_lint_passes_at_its_default_profile_offline(tmp_path):
    proc = subprocess.run([_tool("ansible-lint"), "--offline", "--nocolor"], cwd=ANSIBLE_DIR, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "0 failure(s), 0 warning(s)" in output, output
    # it really looked at the role, its module and the examples
    assert "files processed" in output and "Last profile that met the validation criteria was 'production'" in output


def test_ansible_lint_would_report_a_violation(tmp_path):
    """The check above can fail: a copy of the tree with a task using a bare `shell` is flagged."""
    copy = tmp_path / "ansible"
    shutil.copytree(ANSIBLE_DIR, copy)
    tasks = copy / "roles/nodeagent/tasks/install.yml"
    tasks.write_text(tasks.read_text() + "\n- shell: echo hi\n")
    proc = subprocess.run([_tool("ansible-lint"), "--offline", "--nocolor"], cwd=copy, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "fqcn[action-core]" in proc.stdout + proc.stderr or "name[missing]" in proc.stdout + proc.stderr


@pytest.mark.parametrize("playbook", ["examples/site.yml", "examples/vagrant.yml"])
def test_playbooks_pass_syntax_check(tmp_path, playbook):
    proc = subprocess.run([_tool("ansible-playbook"), "--syntax-check", playbook], cwd=ANSIBLE_DIR,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_vagrantfile_is_valid_ruby():
    ruby = shutil.which("ruby")
    if ruby is None:
        pytest.skip("ruby is not installed (scripts/setup-test-env installs it)")
    proc = subprocess.run([ruby, "-c", str(REPO / "vagrant/Vagrantfile")], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout.strip()) == (0, "Syntax OK"), proc.stderr


def test_vagrantfile_enables_nested_virtualization_for_both_providers():
    text = (REPO / "vagrant/Vagrantfile").read_text()
    assert "lv.nested = true" in text and 'lv.cpu_mode = "host-passthrough"' in text
    assert '"--nested-hw-virt", "on"' in text
    assert 'playbook = "examples/vagrant.yml"' in text and (ANSIBLE_DIR / "examples/vagrant.yml").exists()
