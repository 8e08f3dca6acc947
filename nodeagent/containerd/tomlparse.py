"""The package's one TOML parser: strict like containerd, every failure a ConfigError naming the file.

tomllib only (no tomlkit), so detection can parse configs without loading the editor.
"""

from __future__ import annotations

import tomllib
from typing import Any

from nodeagent.errors import ConfigError


def parse(text: str | bytes, path: str) -> dict[str, Any]:
    """Strict parse (tomllib, as containerd does) of a file's text or raw bytes (UTF-8, a BOM
    allowed); a broken file is a ConfigError naming it."""
    try:
        return tomllib.loads(text.decode("utf-8-sig") if isinstance(text, bytes) else text)
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text", "containerd configs are UTF-8 TOML; fix the file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}", "fix the syntax (containerd would refuse to start with it), then run again"
        ) from None
    except RecursionError:  # tomllib recurses per nesting level; a hostile file can nest thousands deep
        raise ConfigError(f"{path} nests arrays or tables too deeply to parse",
                          "this is not a containerd config; restore the real one, then run again") from None
