"""`inspect.registered_handlers` (pure Python, used by doctor and the planner) must agree with what
REAL containerd 1.6 / 1.7 / 2.1 report in `config dump` for the same files and imports."""

from __future__ import annotations

import subprocess

import pytest

from nodeagent.containerd import validate
from nodeagent.facts import HostFacts
from nodeagent.containerd.plan import plan_install
from nodeagent.errors import ConfigError
from nodeagent.containerd.inspect import registered_handlers
from nodeagent.host import HostRoot
from nodeagent.runtimes import gvisor
from tests.support.scenarios import BINARIES, VERSIONS, have_containerd

pytestmark = pytest.mark.integration

HEADERS = {
    1: "[plugins.cri.containerd.runtimes.{h}]",
    2: '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{h}]',
    3: "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.{h}]",
}


def config(version: int, handlers: list[str], imports: list[str] | None = None, extra: str = "") -> str:
    lines = [] if version == 1 else [f"version = {version}"]
    if imports is not None:
        lines.append("imports = [" + ", ".join(f'"{i}"' for i in imports) + "]")
    for h in handlers:
        lines += [HEADERS[version].format(h=h), 'runtime_type = "io.containerd.runc.v2"']
    return "\n".join(lines) + "\n" + extra


CASES = {
    "v2-main-only": {"config.toml": config(2, ["runc", "runsc"])},
    "v2+v2-dropin": {"config.toml": config(2, ["runc"], ["/etc/containerd/conf.d/*.toml"]),
                     "conf.d/a.toml": config(2, ["runsc"])},
    "v3+v2-dropin": {"config.toml": config(3, ["runc"], ["/etc/containerd/conf.d/*.toml"]),
                     "conf.d/a.toml": config(2, ["runsc"])},
    "v2+v3-dropin": {"config.toml": config(2, ["runc"], ["/etc/containerd/conf.d/*.toml"]),
                     "conf.d/a.toml": config(3, ["runsc"])},
    "v2+v2+v3-dropins": {"config.toml": config(2, ["runc"], ["/etc/containerd/conf.d/*.toml"]),
                         "conf.d/a.toml": config(2, ["runsc"]), "conf.d/b.toml": config(3, ["kata"])},
    "v1+v1-dropin": {"config.toml": config(1, ["runc"], ["/etc/containerd/conf.d/*.toml"]),
                     "conf.d/a.toml": config(1, ["runsc"])},
    "v2+cri-dropin-without-runtimes": {
        "config.toml": config(2, ["runc", "runsc"], ["/etc/containerd/conf.d/*.toml"]),
        "conf.d/a.toml": 'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\nsandbox_image = "x"\n'},
    "relative-and-nested-imports": {
        "config.toml": config(2, ["runc"], ["conf.d/a.toml"]),
        "conf.d/a.toml": config(2, ["runc", "runsc"], ["/etc/containerd/more/*.toml"]),
        "more/b.toml": config(2, ["runc", "runsc", "kata"])},
    "missing-plain-import": {"config.toml": config(2, ["runc", "runsc"], ["/etc/containerd/nowhere.toml"])},
}


@pytest.mark.parametrize("series", sorted(VERSIONS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_registered_handlers_match_config_dump(case, series, tmp_path):
    if not have_containerd(series):
        pytest.skip(f"containerd {series} is not installed (run scripts/setup-test-env)")
    for rel, text in CASES[case].items():
        target = tmp_path / "etc/containerd" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    host = HostRoot(tmp_path)
    if case == "missing-plain-import" and series.startswith("1"):
        # 1.x refuses to start; 2.x skips the missing file. registered_handlers says the same.
        with pytest.raises(ConfigError, match="does not exist"):
            registered_handlers(host, "/etc/containerd/config.toml", VERSIONS[series])
        proc = subprocess.run([str(BINARIES[series]), "--config", str(tmp_path / "etc/containerd/config.toml"),
                               "config", "dump"], capture_output=True, text=True, timeout=30)
        assert proc.returncode != 0 and "no such file" in proc.stderr
        return
    ours = set(registered_handlers(host, "/etc/containerd/config.toml", VERSIONS[series]))
    if series == "1.7" and "v3-dropin" in case:
        # 1.7 refuses to start with any version 3 file (1.6 ignores its v3 tables): the planner refuses too
        with pytest.raises(ConfigError, match="unsupported config version"):
            validate.effective_dump(host, "/etc/containerd/config.toml", {}, str(BINARIES[series]))
        with pytest.raises(ConfigError, match="containerd 1.x"):
            plan_install(host, [gvisor.handler()], HostFacts.from_json({"containerd": {"version": VERSIONS[series]}}),
                         config_path="/etc/containerd/config.toml")
        return
    dumped = set(validate.effective_dump(host, "/etc/containerd/config.toml", {}, str(BINARIES[series])))
    # containerd fills in its default `runc` when no handler is configured (1.x) or always (2.x merges defaults)
    if not ours or series.startswith("2"):
        ours |= {"runc"}
    assert ours == dumped
