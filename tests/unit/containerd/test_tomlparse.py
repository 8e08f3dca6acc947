"""The one TOML parser: text or raw bytes in, a ConfigError naming the file for anything broken."""

import pytest

from nodeagent.containerd.tomlparse import parse
from nodeagent.errors import ConfigError


def test_text_and_bytes_with_a_bom_parse_alike():
    assert parse("version = 2\n", "/c.toml") == parse(b"\xef\xbb\xbfversion = 2\n", "/c.toml") == {"version": 2}


@pytest.mark.parametrize("data, said", [
    (b"version = 2\n# caf\xe9\n", "/c.toml is not UTF-8 text"),
    ("[plugins]\n[plugins]\n", "/c.toml is not valid TOML"),
    ("a = " + "[" * 5000 + "]" * 5000 + "\n", "/c.toml nests arrays or tables too deeply"),
])
def test_broken_files_are_config_errors_naming_the_file(data, said):
    with pytest.raises(ConfigError) as caught:
        parse(data, "/c.toml")
    assert caught.value.message.startswith(said) and caught.value.hint
