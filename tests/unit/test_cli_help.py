"""Every option of every command has a one-line help text, and `nodeagent --help` lists the
commands one per line with two examples. Walks the REAL parser and runs the REAL CLI."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from nodeagent import cli, cli_help
from nodeagent.settings import Settings
from tests.support.cli import run_cli


def _command_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(subs) == 1
    return {"": parser, **subs[0].choices}


def test_every_command_has_a_parser():
    assert set(_command_parsers()) - {""} == set(cli.COMMANDS)


@pytest.mark.parametrize("command", ["", *cli.COMMANDS])
def test_every_option_has_one_line_of_help(command):
    parser = _command_parsers()[command]
    missing, multi = [], []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        text = action.help
        if not text or text == argparse.SUPPRESS or not text.strip():
            missing.append(name)
        elif "\n" in text:
            multi.append(name)
    assert (missing, multi) == ([], [])


def test_every_setting_has_help_for_its_file_key_and_variable():
    """Settings without a flag are still options (config file, NODEAGENT_<NAME>)."""
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert sorted(fields - set(cli_help.HELP)) == []
    assert [k for k, v in cli_help.HELP.items() if "\n" in v or not v.strip()] == []


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_command_help_runs_and_shows_every_flag_with_text(command):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    for action in _command_parsers()[command]._actions:
        for flag in action.option_strings:
            assert flag in proc.stdout
        if action.help:
            assert action.help.split()[0] in proc.stdout


def test_top_level_help_lists_commands_one_line_each_with_two_examples():
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for name, (_, text) in cli.COMMANDS.items():
        assert [line for line in lines if line.split()[:1] == [name]] == [f"    {name:<18}{text}"]
    examples = lines[lines.index("examples:") + 1:]
    assert len([line for line in examples if line.startswith("  nodeagent ")]) == 2
