"""Download back-off comes from the `download_backoff` setting only (issue 12 removed a second env
read in fetch_options): NODEAGENT_DOWNLOAD_BACKOFF must still reach the fetcher, through settings."""

from __future__ import annotations

from nodeagent import settings as settings_mod
from nodeagent.artifacts.api import fetch_options


def test_backoff_env_var_reaches_the_fetcher_through_settings(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("download_retries = 2\n")
    environ = {"NODEAGENT_DOWNLOAD_BACKOFF": "0.01", "NODEAGENT_CONFIG": str(config)}
    options = fetch_options(settings_mod.load({}, environ=environ))
    assert (options.backoff, options.retries) == (0.01, 2)
    assert fetch_options(settings_mod.Settings()).backoff == 1.0  # the documented default
