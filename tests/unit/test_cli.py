"""The CLI contract: global options anywhere, usage errors exit 64 with a hint, a bad config file
is a known error."""

import json

from tests.support.cli import assert_known_error, run_cli


def test_global_options_before_or_after_command():
    before = run_cli("-o", "json", "version")
    after = run_cli("version", "-o", "json")
    assert before.returncode == after.returncode == 0
    assert json.loads(before.stdout) == json.loads(after.stdout)
    assert json.loads(before.stdout)["nodeagent"]


def test_usage_errors_exit_64_with_hint():
    assert "invalid choice" in assert_known_error(run_cli("frobnicate"), 64)
    assert_known_error(run_cli(), 64)
    assert_known_error(run_cli("version", "-o", "yaml"), 64)


def test_bad_config_file_is_a_known_error(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("output = [unclosed")
    assert "not valid TOML" in assert_known_error(run_cli("--config", str(cfg), "version"), 64)
    cfg.write_text('no_such_setting = 1\n')
    assert "unknown setting" in assert_known_error(run_cli("--config", str(cfg), "version"), 64)
    assert "does not exist" in assert_known_error(run_cli("--config", str(tmp_path / "nope"), "version"), 64)
