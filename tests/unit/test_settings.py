"""A TOML boolean in the settings file stays a boolean (`skip_eligibility = false` must not skip)."""

from nodeagent import settings


def test_toml_false_is_false_and_true_is_true(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('skip_eligibility = false\nkata_compat_label = true\n')
    loaded = settings.load({"config": str(config)}, environ={})
    assert loaded.skip_eligibility is False
    assert loaded.kata_compat_label is True
