"""containerd.inspect: which handlers containerd would serve from a config on disk, with
containerd 1.x's replace-the-CRI-table rule and 2.x's deep merge, read from fake roots.
(Real daemons confirmed these rules: tests/integration/test_containerd_config_inspect.py.)"""

from __future__ import annotations

import pytest

from nodeagent.containerd.imports import LoadedFile
from nodeagent.containerd.inspect import (
    containerd_major,
    decoded_option,
    deep_merge,
    default_runtime_name,
    effective_runtimes,
    registered_handlers,
)
from nodeagent.errors import ConfigError
from nodeagent.host import HostRoot

CONFIG = "/etc/containerd/config.toml"
DROPIN = "/etc/containerd/conf.d/90-x.toml"
PLUGIN = {1: "cri", 2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}


def root(tmp_path, files: dict[str, str]) -> HostRoot:
    for path, text in files.items():
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return HostRoot(tmp_path)


def config(version: int, handlers: dict[str, str], imports: list[str] | None = None, default: str = "") -> str:
    lines = [] if version == 1 else [f"version = {version}"]
    if imports is not None:
        lines.append("imports = [" + ", ".join(f'"{i}"' for i in imports) + "]")
    table = f'plugins."{PLUGIN[version]}".containerd'
    if default:
        lines += [f"[{table}]", f'default_runtime_name = "{default}"']
    for name, runtime_type in handlers.items():
        lines += [f"[{table}.runtimes.{name}]", f'runtime_type = "{runtime_type}"']
    return "\n".join(lines) + "\n"


def loaded(path: str, version: int, containerd: dict) -> LoadedFile:
    return LoadedFile(path=path, version=version, data={"plugins": {PLUGIN[version]: {"containerd": containerd}}})


@pytest.mark.parametrize(("version", "main_version", "major"), [
    ("1.7.24", 3, 1), ("v2.1.9", 1, 2), ("10.0", 1, 2), ("1.6.20", 2, 1),
    (None, 3, 2), (None, 2, 1), ("", 4, 2), ("devel", 2, 1), ("devel", 3, 2),
])
def test_the_daemon_version_picks_the_rules_and_the_schema_decides_without_one(version, main_version, major):
    assert containerd_major(version, main_version) == major


def test_an_option_matches_by_exact_name_first_then_case_insensitively():
    assert decoded_option({"SystemdCgroup": True}, "SystemdCgroup") is True
    assert decoded_option({"systemdCgroup": True}, "SystemdCgroup") is True
    assert decoded_option({"systemdcgroup": False, "SystemdCgroup": True}, "SystemdCgroup") is True
    assert decoded_option({"BinaryName": "x"}, "SystemdCgroup") is None
    assert decoded_option("not a table", "SystemdCgroup") is None
    assert decoded_option({1: True}, "SystemdCgroup") is None


def test_deep_merge_merges_tables_replaces_the_rest_and_copies():
    into = {"a": {"x": 1, "y": 2}, "b": [1], "c": {"k": 1}}
    extra = {"a": {"y": 3, "z": {"deep": [1]}}, "b": [2], "c": "scalar"}
    deep_merge(into, extra)
    assert into == {"a": {"x": 1, "y": 3, "z": {"deep": [1]}}, "b": [2], "c": "scalar"}
    extra["a"]["z"]["deep"].append(2)
    assert into["a"]["z"]["deep"] == [1], "a merged value must not alias the source"


def test_containerd_1x_takes_the_last_cri_table_whole_not_merged():
    chain = [loaded(CONFIG, 2, {"runtimes": {"runc": {"runtime_type": "io.containerd.runc.v2"}},
                                 "default_runtime_name": "runc"}),
             loaded(DROPIN, 2, {"runtimes": {"runsc": {"runtime_type": "io.containerd.runsc.v1"}}})]
    assert list(effective_runtimes(chain, 1)) == ["runsc"]
    assert sorted(effective_runtimes(chain, 2)) == ["runc", "runsc"]


def test_containerd_1x_ignores_a_v3_file_and_files_without_a_cri_table():
    chain = [loaded(CONFIG, 2, {"runtimes": {"runc": {}}}),
             loaded("/a.toml", 3, {"runtimes": {"kata": {}}}),
             LoadedFile(path="/b.toml", version=2, data={"plugins": {"other": {}}})]
    assert list(effective_runtimes(chain, 1)) == ["runc"]


def test_containerd_2x_ignores_an_old_schema_dropin_unless_the_merged_version_is_2():
    v2_dropin = loaded(DROPIN, 2, {"runtimes": {"runsc": {}}})
    assert sorted(effective_runtimes([loaded(CONFIG, 2, {"runtimes": {"runc": {}}}), v2_dropin], 2)) == [
        "runc", "runsc"]
    assert list(effective_runtimes([loaded(CONFIG, 3, {"runtimes": {"runc": {}}}), v2_dropin], 2)) == ["runc"]
    v1_main = LoadedFile(path=CONFIG, version=1, data={"plugins": {"cri": {"containerd": {"runtimes": {"a": {}}}}}})
    v1_dropin = LoadedFile(path=DROPIN, version=1, data={"plugins": {"cri": {"containerd": {"runtimes": {"b": {}}}}}})
    assert list(effective_runtimes([v1_main, v1_dropin], 2)) == ["a"], "the main file is always migrated"


def test_non_table_handlers_and_runtimes_are_skipped_and_the_result_is_a_copy():
    chain = [loaded(CONFIG, 3, {"runtimes": {"runc": {"options": {"x": 1}}, "junk": "text"}})]
    runtimes = effective_runtimes(chain, 2)
    assert runtimes == {"runc": {"options": {"x": 1}}}
    runtimes["runc"]["options"]["x"] = 2
    assert chain[0].data["plugins"][PLUGIN[3]]["containerd"]["runtimes"]["runc"]["options"]["x"] == 1
    assert effective_runtimes([loaded(CONFIG, 3, {"runtimes": "text"})], 2) == {}
    assert effective_runtimes([], 2) == {}


@pytest.mark.parametrize(("table", "expected"), [
    ({"default_runtime_name": "runsc"}, "runsc"), ({"default_runtime_name": ""}, "runc"),
    ({"default_runtime_name": 7}, "runc"), ({}, "runc"),
])
def test_the_default_handler_falls_back_to_runc(table, expected):
    assert default_runtime_name([loaded(CONFIG, 2, table)], 2) == expected


def test_registered_handlers_follows_imports_on_disk_with_the_daemons_rules(tmp_path):
    host = root(tmp_path, {CONFIG: config(2, {"runc": "io.containerd.runc.v2"}, imports=["conf.d/*.toml"]),
                           DROPIN: config(2, {"runsc": "io.containerd.runsc.v1"})})
    assert sorted(registered_handlers(host, CONFIG, "2.1.9")) == ["runc", "runsc"]
    assert sorted(registered_handlers(host, CONFIG, "1.7.24")) == ["runsc"]
    assert sorted(registered_handlers(host, CONFIG)) == ["runsc"], "a v2 main config without a version means 1.x"


def test_registered_handlers_answers_for_candidate_contents_without_writing(tmp_path):
    host = root(tmp_path, {CONFIG: config(3, {"runc": "io.containerd.runc.v2"}, imports=["conf.d/*.toml"])})
    candidate = config(3, {"kata": "io.containerd.kata.v2"}).encode()
    assert sorted(registered_handlers(host, CONFIG, "2.1.9", {DROPIN: candidate})) == ["kata", "runc"]
    assert not (tmp_path / DROPIN.lstrip("/")).exists()
    with pytest.raises(ConfigError):
        registered_handlers(host, CONFIG, "2.1.9", {CONFIG: None})


def test_a_missing_plain_import_is_fatal_for_1x_and_skipped_by_2x(tmp_path):
    host = root(tmp_path, {CONFIG: config(2, {"runc": "io.containerd.runc.v2"}, imports=["/etc/containerd/gone.toml"])})
    with pytest.raises(ConfigError, match="does not exist"):
        registered_handlers(host, CONFIG, "1.7.24")
    assert list(registered_handlers(host, CONFIG, "2.1.9")) == ["runc"]


def test_without_a_version_a_v3_config_skips_a_missing_import_like_containerd_2x(tmp_path):
    host = root(tmp_path, {CONFIG: config(3, {"runc": "io.containerd.runc.v2"}, imports=["/etc/containerd/gone.toml"])})
    assert list(registered_handlers(host, CONFIG)) == ["runc"]
