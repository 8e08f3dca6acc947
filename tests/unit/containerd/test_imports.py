"""containerd.imports: the chain of files containerd loads (the main config, then its imports,
breadth first like containerd's LoadConfig), read from fake roots, with planned files overlaid."""

from __future__ import annotations

import os

import pytest

from nodeagent.containerd.imports import absolute_import, expand_import, glob_matches, load_chain, load_file
from nodeagent.errors import ConfigError
from nodeagent.host import HostRoot

CONFIG = "/etc/containerd/config.toml"


def root(tmp_path, files: dict[str, str | bytes]) -> HostRoot:
    for path, text in files.items():
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text if isinstance(text, bytes) else text.encode())
    return HostRoot(tmp_path)


def test_entries_are_absolute_host_paths_relative_to_their_importer():
    assert absolute_import("conf.d/*.toml", CONFIG) == "/etc/containerd/conf.d/*.toml"
    assert absolute_import("../x//y.toml", CONFIG) == "/etc/x/y.toml"
    assert absolute_import("/etc/containerd/./a.toml", CONFIG) == "/etc/containerd/a.toml"


def test_a_glob_matches_within_one_path_segment_like_go_filepath_match():
    assert glob_matches("/etc/containerd/conf.d/*.toml", "/etc/containerd/conf.d/90-nodeagent.toml")
    assert not glob_matches("/etc/containerd/*.toml", "/etc/containerd/conf.d/x.toml")
    assert glob_matches("/etc/containerd/conf.d/[0-9]?-*.toml", "/etc/containerd/conf.d/90-x.toml")


def test_planned_files_join_or_leave_a_globs_matches(tmp_path):
    host = root(tmp_path, {"/etc/containerd/conf.d/10-a.toml": "", "/etc/containerd/conf.d/20-b.toml": ""})
    planned = {"/etc/containerd/conf.d/90-nodeagent.toml": b"", "/etc/containerd/conf.d/10-a.toml": None,
               "/etc/containerd/other/x.toml": b""}
    assert expand_import(host, "conf.d/*.toml", CONFIG, planned) == ["/etc/containerd/conf.d/20-b.toml",
                                                                      "/etc/containerd/conf.d/90-nodeagent.toml"]
    assert expand_import(host, "conf.d/missing.toml", CONFIG) == ["/etc/containerd/conf.d/missing.toml"]


def test_the_chain_is_breadth_first_and_each_file_loads_once(tmp_path):
    host = root(tmp_path, {
        CONFIG: 'version = 2\nimports = ["/etc/containerd/a.toml", "/etc/containerd/b.toml"]\n',
        "/etc/containerd/a.toml": 'version = 2\nimports = ["/etc/containerd/c.toml"]\n',
        "/etc/containerd/b.toml": 'version = 2\nimports = ["/etc/containerd/config.toml"]\n',  # a cycle
        "/etc/containerd/c.toml": "version = 2\n",
    })
    assert [f.path for f in load_chain(host, CONFIG)] == [CONFIG, "/etc/containerd/a.toml", "/etc/containerd/b.toml",
                                                         "/etc/containerd/c.toml"]


def test_a_missing_plain_import_fails_on_1x_and_is_skipped_on_2x(tmp_path):
    host = root(tmp_path, {CONFIG: 'version = 2\nimports = ["/etc/containerd/gone.toml"]\n'})
    with pytest.raises(ConfigError, match="imports /etc/containerd/gone.toml, which does not exist") as exc:
        load_chain(host, CONFIG)
    assert "containerd 1.x refuses to start" in exc.value.hint
    assert [f.path for f in load_chain(host, CONFIG, missing_ok=True)] == [CONFIG]
    with pytest.raises(ConfigError, match="cannot read containerd config"):
        load_chain(host, "/etc/containerd/nothing.toml", missing_ok=True)


def test_a_planned_main_file_is_read_instead_of_the_disk(tmp_path):
    host = root(tmp_path, {CONFIG: "version = 2\n"})
    chain = load_chain(host, CONFIG, {CONFIG: b'version = 3\nimports = ["conf.d/*.toml"]\n',
                                      "/etc/containerd/conf.d/90-nodeagent.toml": b"version = 3\n"})
    assert [(f.path, f.version) for f in chain] == [(CONFIG, 3), ("/etc/containerd/conf.d/90-nodeagent.toml", 3)]


def test_an_absolute_symlink_is_followed_inside_the_root(tmp_path):
    host = root(tmp_path, {"/srv/containerd.toml": "version = 2\n"})
    (tmp_path / "etc/containerd").mkdir(parents=True)
    os.symlink("/srv/containerd.toml", tmp_path / "etc/containerd/config.toml")
    assert load_chain(host, CONFIG)[0].version == 2


@pytest.mark.parametrize("raw, words", [
    (b"version = 2\n\xff\xfe\n", "is not UTF-8 text"),
    (b"version = 2\n[plugins\n", "is not valid TOML"),
    (b"a = " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "nests arrays or tables too deeply"),
    (b'version = 2\nimports = "conf.d/*.toml"\n', "`imports` must be a list of strings"),
    (b'version = 2\nimports = [1]\n', "`imports` must be a list of strings"),
])
def test_a_file_containerd_would_not_read_is_a_config_error_naming_it(tmp_path, raw, words):
    with pytest.raises(ConfigError, match=words) as exc:
        load_file(HostRoot(tmp_path), CONFIG, raw)
    assert exc.value.hint


def test_a_utf8_bom_is_read_like_containerd_reads_it(tmp_path):
    assert load_file(HostRoot(tmp_path), CONFIG, b"\xef\xbb\xbfversion = 2\n").version == 2
