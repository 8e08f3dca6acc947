"""Settings: precedence (flag, environment, file), types and choices, and a TOML boolean in the
settings file stays a boolean (`skip_eligibility = false` must not skip)."""

import pytest

from nodeagent import settings
from nodeagent.errors import UsageError


def test_toml_false_is_false_and_true_is_true(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('skip_eligibility = false\nkata_compat_label = true\n')
    loaded = settings.load({"config": str(config)}, environ={})
    assert loaded.skip_eligibility is False
    assert loaded.kata_compat_label is True


def test_settings_precedence_flag_env_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('gvisor_version = "20240101"\nkata_version = "3.1.0"\nhealth-timeout = 5\n')
    env = {"NODEAGENT_CONFIG": str(cfg), "NODEAGENT_KATA_VERSION": "3.2.0"}
    s = settings.load({"gvisor_version": None}, env)
    assert (s.gvisor_version, s.kata_version, s.health_timeout) == ("20240101", "3.2.0", 5.0)
    s = settings.load({"kata_version": "3.3.0"}, env)
    assert s.kata_version == "3.3.0"


def test_settings_env_types_and_choices(tmp_path):
    env = {"NODEAGENT_SKIP_ELIGIBILITY": "yes", "NODEAGENT_KATA_EXTRA_HANDLERS": "kata-qemu, kata-clh",
           "NODEAGENT_CONFIG": str(tmp_path / "absent-but-explicit")}
    with pytest.raises(UsageError):
        settings.load({}, env)
    env.pop("NODEAGENT_CONFIG")
    s = settings.load({}, env)
    assert s.skip_eligibility is True and s.kata_extra_handlers == ["kata-qemu", "kata-clh"]
    with pytest.raises(UsageError):
        settings.load({}, {"NODEAGENT_HEALTH_TIMEOUT": "soon"})
    with pytest.raises(UsageError):
        settings.load({}, {"NODEAGENT_RESTART": "reboot"})


def test_node_name_from_downward_api_env():
    assert settings.load({}, {"NODE_NAME": "node-7"}).node_name == "node-7"
    assert settings.load({"node_name": "x"}, {"NODE_NAME": "node-7"}).node_name == "x"
