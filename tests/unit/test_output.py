"""output: `-o json` prints the data, text mode the text (built only when asked), one final newline."""

from __future__ import annotations

import io
import json
from pathlib import PurePosixPath

from nodeagent.output import Result, emit, table


def test_json_and_text_renderings():
    built = []

    def text():
        built.append(True)
        return "for people"

    result = Result({"a": 1, "path": PurePosixPath("/etc/x")}, text)
    assert json.loads(result.render("json")) == {"a": 1, "path": "/etc/x"}  # what JSON cannot hold, as text
    assert built == []  # the text of a JSON run is never built
    assert result.render("text") == "for people" and built == [True]


def test_emit_ends_with_one_newline_and_prints_nothing_for_empty_text():
    out = io.StringIO()
    emit(Result({}, "line"), "text", out)
    emit(Result({}, "done\n"), "text", out)
    emit(Result({}, ""), "text", out)
    assert out.getvalue() == "line\ndone\n"


def test_table_pads_every_column_but_the_last():
    text = table([["install", "/etc/containerd/config.toml"], ["none", "/x"]], ["action", "file"])
    assert text.splitlines() == ["action   file", "install  /etc/containerd/config.toml", "none     /x"]
    assert table([]) == ""
