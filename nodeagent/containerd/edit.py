"""Domain verbs on containerd config text: add_runtime, remove_runtime, add/remove imports.

Adding appends a self-contained block of tables at the end of the file, so every byte
the operator wrote stays where it was (comments, order, quoting, tables declared out
of order as kind does). TOML allows a sub-table header after its parent was closed,
so `[plugins."…".containerd.runtimes.runsc]` at the end is valid wherever the parent
lives. New text follows the file's own conventions: CRLF or LF, single or double
quoted plugin keys (EKS uses single quotes), the indentation of the runtime tables.
Removing cuts our own block byte for byte when it is still there as we wrote it; an
operator's table (replaced with --force) is cut line by line from its header, and only
if that leaves exactly the expected document is tomlkit asked to do it instead.
tomlkit is not the first choice for whole documents: it rejects some valid files (a
sub-table declared after an unrelated table sharing a prefix; found by the property test).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from typing import Any

import tomlkit
import tomlkit.exceptions

from nodeagent import runtimes as runtime_plugins
from nodeagent.containerd import model
from nodeagent.containerd.tomlparse import parse
from nodeagent.errors import ConfigError

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")  # fullmatch: a key ending in "\n" must be quoted
BOM = "\ufeff"


@dataclass
class TextStyle:
    """How a file writes things, so our additions look like the operator's own."""

    crlf: bool = False
    bom: bool = False
    single_quotes: bool = False
    indent: str = ""  # before a key, as in the file's runtime tables
    header_indent: str = ""  # before a [table] header, as in the file's runtime tables


def decode(raw: bytes, path: str) -> tuple[str, TextStyle]:
    """LF-normalized text plus the style to restore; CRLF only when the whole file uses it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text", "containerd configs are UTF-8 TOML; fix the file") from None
    style = TextStyle()
    if text.startswith(BOM):
        style.bom, text = True, text[1:]
    lf = text.count("\n")
    if lf and text.count("\r\n") == lf:
        style.crlf, text = True, text.replace("\r\n", "\n")
    style.single_quotes = bool(re.search(r"^\s*\[plugins\.'", text, re.M)) and not re.search(
        r'^\s*\[plugins\."', text, re.M
    )
    # the first runtime table (usually runc) shows how this file indents a handler's header and keys
    match = re.search(r"^([ \t]*)\[[^\]\n]*runtimes\.[^\]\n]*\][ \t]*\n(?:[ \t]*\n)*([ \t]*)[^\s\[#]", text, re.M)
    if match:
        style.header_indent, style.indent = match.group(1), match.group(2)
    return text, style


def encode(text: str, style: TextStyle) -> bytes:
    if style.crlf:
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    return ((BOM if style.bom else "") + text).encode("utf-8")


def format_key(key: str, style: TextStyle) -> str:
    if _BARE_KEY.fullmatch(key):
        return key
    if style.single_quotes and "'" not in key:
        return f"'{key}'"
    return tomlkit.string(key).as_string()


def format_value(value: Any, style: TextStyle) -> str:
    if isinstance(value, str) and style.single_quotes and "'" not in value and "\n" not in value:
        return f"'{value}'"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v, style) for v in value) + "]"
    return tomlkit.item(value).as_string()


def header(path: tuple[str, ...], style: TextStyle) -> str:
    return "[" + ".".join(format_key(k, style) for k in path) + "]"


def render_runtime(version: int, spec: model.HandlerSpec, style: TextStyle) -> str:
    """The tables for one handler, LF-terminated, as this file would write them."""
    base = model.runtimes_table_path(version) + (spec.name,)
    lines = [style.header_indent + header(base, style)]
    table = spec.table()
    for key, value in table.items():
        if key != "options":
            lines.append(f"{style.indent}{key} = {format_value(value, style)}")
    if "options" in table:
        lines += ["", style.header_indent + header(base + ("options",), style)]
        for key, value in table["options"].items():
            lines.append(f"{style.indent}{key} = {format_value(value, style)}")
    return "\n".join(lines) + "\n"


def append_block(text: str, block: str) -> str:
    """Append after a blank line (adding the missing final newline first)."""
    if not text.strip():
        return block
    if not text.endswith("\n"):
        text += "\n"
    if not text.endswith("\n\n"):
        text += "\n"
    return text + block


def runtimes_of(data: dict[str, Any], version: int) -> dict[str, Any]:
    node: Any = data
    for key in model.runtimes_table_path(version):
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def add_runtime(text: str, version: int, spec: model.HandlerSpec, style: TextStyle, path: str) -> str:
    """Register `spec` in a file of schema `version` (the caller checked it is not there yet)."""
    existing = runtimes_of(parse(text, path), version)
    if spec.name in existing:
        raise ConfigError(f"{path} already defines handler {spec.name!r}", "remove it first (or pass --force)")
    new = append_block(text, render_runtime(version, spec, style))
    # Proves the append is valid TOML here (e.g. `runtimes` could be an inline table).
    try:
        data = tomllib.loads(new)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"cannot add handler {spec.name!r} to {path}: the result would not be valid TOML ({exc})",
            "the runtimes table is probably an inline table; rewrite it as [tables], then run again",
        ) from None
    if runtimes_of(data, version).get(spec.name) != spec.table():
        raise ConfigError(f"adding handler {spec.name!r} to {path} did not produce the expected table", None)
    return new


def remove_runtime(text: str, version: int, name: str, style: TextStyle, path: str) -> str:
    """Drop handler `name` (and its sub-tables); the exact block we append is removed byte for byte."""
    if name not in runtimes_of(parse(text, path), version):
        return text
    for spec_text in _our_block_candidates(text, version, name, style):
        if spec_text in text:
            return _cut_block(text, spec_text)
    expected = parse(text, path)
    del runtimes_of(expected, version)[name]
    new = _remove_tables_textually(text, model.runtimes_table_path(version) + (name,))
    if new is not None and _parses_to(new, expected):
        return new
    try:
        doc = tomlkit.parse(text)
        node: Any = doc
        for key in model.runtimes_table_path(version):
            node = node[key]
        del node[name]
        new = doc.as_string()
    except (KeyError, tomlkit.exceptions.TOMLKitError) as exc:
        raise ConfigError(
            f"cannot remove handler {name!r} from {path}: {exc}", "remove its tables by hand, then run again"
        ) from None
    if name in runtimes_of(parse(new, path), version):
        raise ConfigError(f"cannot remove handler {name!r} from {path}", "remove its tables by hand, then run again")
    return new


_HEADER = re.compile(r"^[ \t]*\[(?!\[)[^\n]*\][ \t]*(?:#[^\n]*)?$")


def _header_path(line: str) -> tuple[str, ...] | None:
    try:
        node: Any = tomllib.loads(line.strip() + "\n")
    except tomllib.TOMLDecodeError:
        return None
    keys = []
    while isinstance(node, dict) and len(node) == 1:
        key = next(iter(node))
        keys.append(key)
        node = node[key]
    return tuple(keys)


def _remove_tables_textually(text: str, prefix: tuple[str, ...]) -> str | None:
    """Drop `[prefix]` and `[prefix.*]` tables line by line; comments before the next table stay."""
    lines = text.splitlines(keepends=True)
    headers = [(i, _header_path(line)) for i, line in enumerate(lines) if _HEADER.match(line.rstrip("\r\n"))]
    doomed: set[int] = set()
    for index, (row, keys) in enumerate(headers):
        if keys is None or keys[: len(prefix)] != prefix:
            continue
        end = headers[index + 1][0] if index + 1 < len(headers) else len(lines)
        while end > row + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
            end -= 1  # blank and comment lines right before the next header belong to it
        doomed.update(range(row, end))
    if not doomed:
        return None
    return "".join(line for i, line in enumerate(lines) if i not in doomed)


def _parses_to(text: str, expected: dict[str, Any]) -> bool:
    try:
        return tomllib.loads(text) == expected
    except tomllib.TOMLDecodeError:
        return False


# containerd 1.x's built-in default handler (what `config dump` shows when none is configured)
DEFAULT_RUNC = model.HandlerSpec(name="runc", runtime="runc", runtime_type="io.containerd.runc.v2")


def _our_block_candidates(text: str, version: int, name: str, style: TextStyle) -> list[str]:
    out = [render_runtime(version, DEFAULT_RUNC, style)] if name == DEFAULT_RUNC.name else []
    for rt in runtime_plugins.ALL:
        out += [render_runtime(version, spec, style) for spec in rt.handlers_named(name)]
    return out


def _cut_block(text: str, block: str) -> str:
    """Remove an appended block together with the separator append_block put before it."""
    index = text.rfind(block)
    before, after = text[:index], text[index + len(block):]
    if after.strip():
        return before + after  # not at the end: cut only the tables
    if before.endswith("\n\n"):
        before = before[:-1]
    return before + after


def remove_our_blocks(text: str, name: str, style: TextStyle) -> str:
    """Cut the exact blocks we would have appended for handler `name`, in any config version.

    For files TOML cannot read as they are (a k3s/rke2 Go template): only our own bytes go.
    """
    for version in (1, 2, 3):
        for block in _our_block_candidates(text, version, name, style):
            if block in text:
                text = _cut_block(text, block)
    return text


# -- imports ---------------------------------------------------------------------------------------
# Edited as text, not with tomlkit: tomlkit refuses some valid files (it reports a duplicate key
# for a sub-table declared after an unrelated table that shares a prefix), and only the one
# array has to change.

_TOP_KEY = re.compile(r"""^[ \t]*(?:imports|"imports"|'imports')[ \t]*=[ \t]*\[""", re.M)


def _top_level(text: str) -> str:
    match = re.search(r"^[ \t]*\[", text, re.M)
    return text if match is None else text[: match.start()]


def imports_span(text: str) -> tuple[int, int] | None:
    """(start, end) of the top-level `imports` array literal, brackets included."""
    key = _TOP_KEY.search(_top_level(text))
    if key is None:
        return None
    start = key.end() - 1
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        if c in "\"'":
            i += 1
            while i < len(text) and text[i] != c:
                i += 2 if (c == '"' and text[i] == "\\") else 1
        elif c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
            if depth == 0:
                return start, i + 1
        i += 1
    return None


def set_imports(text: str, entries: list[str], style: TextStyle) -> str:
    """Replace the `imports` array with `entries` (used on validation copies only)."""
    array = "[" + ", ".join(format_value(e, style) for e in entries) + "]"
    span = imports_span(text)
    if span is None:
        return add_import_line(text, array)
    return text[: span[0]] + array + text[span[1]:]


def add_import_line(text: str, array: str) -> str:
    line = f"imports = {array}\n"
    # before the first table header so it stays a top-level key
    match = re.search(r"^[ \t]*\[", text, re.M)
    if match is None:
        return append_block(text, line) if text.strip() else line
    at = match.start()
    if at == 0:
        return line + "\n" + text
    while at > 0 and text[:at].endswith("\n\n"):
        at -= 1  # right after the last top-level line, before the blank lines ahead of the first table
    return text[:at] + line + text[at:]


def add_import(text: str, entry: str, style: TextStyle, path: str) -> str:
    """Add `entry` to the top-level `imports` array (created before the first table if absent)."""
    data = parse(text, path)
    if entry in data.get("imports", []):
        return text
    literal = format_value(entry, style)
    span = imports_span(text)
    if span is None:
        return add_import_line(text, f"[{literal}]")
    inner = text[span[0] + 1: span[1] - 1]
    body = inner.rstrip()
    trailing = inner[len(body):]
    if body.strip() and "\n" in body:  # one entry per line (Talos): a line of its own, same indent and commas
        indent = re.match(r"[ \t]*", body.rsplit("\n", 1)[1]).group(0)
        comma = body.endswith(",")
        body += ("" if comma else ",") + "\n" + indent + literal + ("," if comma else "")
    elif body.strip():
        body += ("" if body.endswith(",") else ",") + " " + literal
    else:
        body, trailing = literal, ""
    new = text[: span[0] + 1] + body + trailing + text[span[1] - 1:]
    if entry not in parse(new, path).get("imports", []):
        raise ConfigError(f"could not add {entry} to `imports` in {path}", "add it by hand, then run again")
    return new


def remove_import(text: str, entry: str, path: str, drop_empty_line: bool = False) -> str:
    """Take `entry` out of `imports`; with drop_empty_line, an emptied `imports = []` line we added goes too."""
    if entry not in parse(text, path).get("imports", []):
        return text
    if drop_empty_line:
        for literal in (format_value(entry, TextStyle()), format_value(entry, TextStyle(single_quotes=True))):
            line = f"imports = [{literal}]\n"
            at = text.find(line)
            if at >= 0 and at < len(_top_level(text)):
                end = at + len(line)
                if at == 0 and text[end:end + 1] == "\n":
                    end += 1  # the blank line add_import_line put after it
                return text[:at] + text[end:]
    span = imports_span(text)
    inner = text[span[0] + 1: span[1] - 1]
    for quote in ('"', "'"):
        literal = re.escape(quote + entry + quote)
        for pattern in (r"\n[ \t]*" + literal + r"[ \t]*,?(?=[ \t]*\n)", r"[ \t]*,[ \t]*" + literal,
                        literal + r"[ \t]*,?[ \t]*", literal):
            new_inner, count = re.subn(pattern, "", inner, count=1)
            if count:
                new = text[: span[0] + 1] + new_inner + text[span[1] - 1:]
                if entry not in parse(new, path).get("imports", []):
                    return new
    raise ConfigError(f"could not remove {entry} from `imports` in {path}", "remove it by hand")
