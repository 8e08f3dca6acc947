"""Domain verbs on containerd config text: add_runtime, remove_runtime, add/remove imports.

Adding appends a self-contained block of tables at the end of the file, so every byte
the operator wrote stays where it was (comments, order, quoting, tables declared out
of order as kind does). TOML allows a sub-table header after its parent was closed,
so `[plugins."…".containerd.runtimes.runsc]` at the end is valid wherever the parent
lives. New text follows the file's own conventions: CRLF or LF, single or double
quoted plugin keys (EKS uses single quotes), the indentation of the runtime tables.
Removing uses tomlkit, which drops exactly one table and keeps everything else.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from typing import Any

import tomlkit
import tomlkit.exceptions

from nodeagent.containerd import model
from nodeagent.errors import ConfigError

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
BOM = "\ufeff"


@dataclass
class TextStyle:
    """How a file writes things, so our additions look like the operator's own."""

    crlf: bool = False
    bom: bool = False
    single_quotes: bool = False
    indent: str = ""


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
    match = re.search(r"^\s*\[[^\]\n]*runtimes\.[^\]\n]*\]\s*\n([ \t]+)\S", text, re.M)
    if match:
        style.indent = match.group(1)
    return text, style


def encode(text: str, style: TextStyle) -> bytes:
    if style.crlf:
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    return ((BOM if style.bom else "") + text).encode("utf-8")


def parse(text: str, path: str) -> dict[str, Any]:
    """Strict parse (tomllib), turning syntax errors into a ConfigError naming the file."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}", "fix the syntax (containerd would refuse to start with it), then run again"
        ) from None


def format_key(key: str, style: TextStyle) -> str:
    if _BARE_KEY.match(key):
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
    lines = [header(base, style)]
    table = spec.table()
    for key, value in table.items():
        if key != "options":
            lines.append(f"{style.indent}{key} = {format_value(value, style)}")
    if "options" in table:
        lines += ["", header(base + ("options",), style)]
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


def _our_block_candidates(text: str, version: int, name: str, style: TextStyle) -> list[str]:
    out = []
    for factory in (model.gvisor_handler, model.kata_handler, model.kata_hypervisor_handler):
        try:
            spec = factory(name)
        except Exception:
            continue
        out.append(render_runtime(version, spec, style))
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


# -- imports ---------------------------------------------------------------------------------------


def add_import(text: str, entry: str, style: TextStyle, path: str) -> str:
    """Add `entry` to the top-level `imports` array (created before the first table if absent)."""
    data = parse(text, path)
    if entry in data.get("imports", []):
        return text
    doc = tomlkit.parse(text)
    if "imports" in doc:
        array = doc["imports"]
        array.append(entry)
        return doc.as_string()
    line = f"imports = [{format_value(entry, style)}]\n"
    # before the first table header so it stays a top-level key
    match = re.search(r"^[ \t]*\[", text, re.M)
    if match is None:
        return append_block(text, line) if text.strip() else line
    at = match.start()
    return text[:at] + line + "\n" + text[at:]


def remove_import(text: str, entry: str, path: str) -> str:
    data = parse(text, path)
    if entry not in data.get("imports", []):
        return text
    doc = tomlkit.parse(text)
    array = doc["imports"]
    for index, value in enumerate(list(array)):
        if value == entry:
            del array[index]
            break
    if len(array) == 0:
        del doc["imports"]
    return doc.as_string()
