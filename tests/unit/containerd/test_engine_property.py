"""Property: whatever an operator did to a valid config (comments, tables, handlers, CRLF, no final
newline), install only adds, a second plan is a no-op, and uninstall gives back the exact bytes."""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nodeagent.containerd import apply, model
from nodeagent.containerd.plan import plan_install, plan_uninstall
from nodeagent.runtimes import gvisor, kata
from tests.support.scenarios import CORPUS, OURS, Scenario
from tests.support.tree import diff_snapshots, snapshot

BASES = {
    "kind-node-v2.toml": ("1.6", "1.7", "2.1"),
    "eks-nodeadm-nvidia-v2.toml": ("1.7", "2.1"),
    "eks-nodeadm-nvidia-v3.toml": ("2.1",),
    "minikube-iso-v1.toml": ("1.6",),
    "default-1.7.toml": ("1.7",),
}
SPECS = [gvisor.handler(), kata.handler()]
names = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True).filter(lambda n: n not in ("runsc", "kata"))
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz _-.:/#'\"", max_size=30)
values = st.one_of(st.integers(-5, 10**6), st.booleans(), words, st.lists(words, max_size=3))


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def edits(draw):
    """A list of (kind, payload) edits an operator might make."""
    out = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["comment", "table", "handler", "blank"]))
        if kind == "comment":
            out.append((kind, "# " + draw(words)))
        elif kind == "table":
            keys = draw(st.dictionaries(names, values, max_size=3))
            out.append((kind, (draw(names), keys)))
        elif kind == "handler":
            out.append((kind, draw(names)))
        else:
            out.append((kind, ""))
    return out


def apply_edits(text: str, version: int, changes, positions) -> str:
    lines = text.split("\n")
    header_rows = [i for i, line in enumerate(lines) if line.lstrip().startswith("[")] + [len(lines)]
    plugin = model.cri_runtime_plugin(version)
    for (kind, payload), pick in zip(changes, positions):
        row = header_rows[pick % len(header_rows)]  # insert right before a table header: always a safe spot
        if kind == "comment":
            block = [payload]
        elif kind == "blank":
            block = [""]
        elif kind == "table":
            name, keys = payload
            block = [f"[nodeagent-prop-test.{name}]"] + [f"{k} = {toml_value(v)}" for k, v in keys.items()]
        else:
            block = [f'[plugins."{plugin}".containerd.runtimes.{payload}]', 'runtime_type = "io.containerd.runc.v2"']
        lines[row:row] = block
        header_rows = [r + len(block) if r >= row else r for r in header_rows]
    return "\n".join(lines)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(sorted(BASES)), pick=st.integers(0, 2), changes=edits(),
       positions=st.lists(st.integers(0, 1000), min_size=5, max_size=5),
       crlf=st.booleans(), strip_final_newline=st.booleans())
def test_random_operator_edits_round_trip(base, pick, changes, positions, crlf, strip_final_newline):
    source = CORPUS / base if (CORPUS / base).exists() else OURS / base
    text = source.read_text()
    version = model.config_version(tomllib.loads(text).get("version"))
    text = apply_edits(text, version, changes, positions)
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        assume(False)  # e.g. a generated table name repeated twice: not a valid starting config
    if strip_final_newline:
        text = text.rstrip("\n")
    raw = text.encode()
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    series = BASES[base][pick % len(BASES[base])]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scenario = Scenario("prop", series, {"/etc/containerd/config.toml": raw})
        host = scenario.build(root)
        before = snapshot(root, metadata=False)  # a round trip: bytes back, by atomic writes
        plan = plan_install(host, SPECS, scenario.facts())
        apply.apply_install(host, plan)
        assert not plan_install(host, SPECS, scenario.facts()).changed
        undo, state = plan_uninstall(host, None)
        apply.apply_uninstall(host, undo, state)
        after = {k: v for k, v in snapshot(root, metadata=False).items() if not k.startswith("var")}  # nodeagent's state + backups
        assert diff_snapshots(before, after) == []
        assert (root / "etc/containerd/config.toml").read_bytes() == raw


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(sorted(BASES)), pick=st.integers(0, 2), changes=edits(),
       positions=st.lists(st.integers(0, 1000), min_size=5, max_size=5), crlf=st.booleans(), later=words)
def test_operator_edit_after_install_then_uninstall_removes_only_ours(base, pick, changes, positions, crlf, later):
    """The surgical path: the file changed since nodeagent wrote it, so it is not restored from the
    backup; only our tables go, and the operator's text (old and new) stays."""
    source = CORPUS / base if (CORPUS / base).exists() else OURS / base
    text = source.read_text()
    version = model.config_version(tomllib.loads(text).get("version"))
    text = apply_edits(text, version, changes, positions)
    try:
        original = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        assume(False)
    raw = text.encode().replace(b"\n", b"\r\n") if crlf else text.encode()
    series = BASES[base][pick % len(BASES[base])]
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Scenario("prop", series, {"/etc/containerd/config.toml": raw})
        host = scenario.build(Path(tmp))
        plan = plan_install(host, SPECS, scenario.facts())
        apply.apply_install(host, plan)
        config = host.path("/etc/containerd/config.toml")
        nl = b"\r\n" if crlf else b"\n"
        config.write_bytes(config.read_bytes() + b"# " + later.encode() + nl)
        undo, state = plan_uninstall(host, None)
        apply.apply_uninstall(host, undo, state)
        result = config.read_bytes()
        assert tomllib.loads(result.decode()) == original
        assert result.replace(b"\r\n", b"\n").startswith(raw.replace(b"\r\n", b"\n").rstrip(b"\n"))
        assert result.rstrip().endswith((b"# " + later.encode()).rstrip())
