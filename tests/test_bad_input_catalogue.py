"""Hostile or malformed input the product handles that no other test covered yet: configs,
settings files, environment, command lines, archives and downloads through `install`, the API.

Each case runs the real CLI on a fake root (real containerd 1.6 binary for validation, the
suite's directory mirror or a loopback HTTP(S) server) and asserts the error contract and an
unchanged root (owner, mode, size, mtime, inode and bytes; tests/conftest.py also checks the
test's TMPDIR is left empty). Each parameter id is the case's catalogue id. The run lock
under /run is the one trace allowed when the input is judged after the lock is taken (as in
tests/unit/containerd/test_bad_input.py::test_read_only_config_file). The whole catalogue is
counted with `python3 bench/count_bad_input.py`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.faults import harness
from tests.integration import test_artifacts_cli as ARTIFACTS  # the bundle cases' release and version
from tests.support import mirror_builder as M
from tests.support.cli import assert_known_error, run_cli
from tests.support.fake_apiserver import TOKEN, apiserver, kubeconfig_text, pki  # noqa: F401 (fixtures)
from tests.support.hostile_tar import RELEASE_CASES, hostile_release, refusal_words
from tests.support.http_server import LoopbackServer, make_tls, shared_tls
from tests.support.scenarios import have_containerd
from tests.support.tree import diff_snapshots, snapshot

pytestmark = pytest.mark.bad_input
INSTALL = ["install", "--runtime", "kata", "--skip-eligibility", "--restart", "none"]
LOCK_TRACE = ["added run", "added run/nodeagent.lock"]
# for settings given by file or environment: no flag that would override them (flags win)
UNFLAGGED = ["install", "--skip-eligibility"]


@pytest.fixture(scope="module")
def template():
    if not have_containerd("1.6"):
        pytest.skip("containerd 1.6 is not installed (run scripts/setup-test-env)")
    base = Path(tempfile.mkdtemp(prefix="na-catalogue-"))
    try:
        ref = harness.Reference.build(base, "kata", warm_up=False)
        yield ref.template
    finally:
        shutil.rmtree(base, ignore_errors=True)


def refused(template: Path, tmp_path: Path, args: list[str], config: bytes | None = None,
            allowed: list[str] | None = None, *, code: int = 2, env: dict | None = None,
            with_root: bool = True) -> str:
    """Run the CLI on a copy of the template root; assert the error contract and an unchanged root
    (tests/conftest.py checks the test's TMPDIR as well)."""
    root = tmp_path / "root"
    harness.copy_root(template, root)
    if config is not None:
        (root / harness.CONFIG).write_bytes(config)
    before = snapshot(root)
    message = assert_known_error(run_cli(*(["--root", str(root)] if with_root else []), *args, env=env), code)
    assert diff_snapshots(before, snapshot(root)) in ([], allowed or [])
    return message


@pytest.mark.parametrize("config, expect", [
    (b"\x00\xff\xfe" * 50, "not UTF-8"),
    ("version = 2\n# caf\xe9\n".encode("latin-1"), "not UTF-8"),
    (b"[plugins]\n[plugins]\n", "not valid TOML"),
], ids=["binary-garbage", "latin-1", "duplicate-table"])
def test_hostile_containerd_config(template, tmp_path, config, expect):
    assert expect in refused(template, tmp_path, INSTALL, config)


def test_deeply_nested_config_is_a_config_error(template, tmp_path):
    """Regression: RecursionError in the parser was reported as 'unexpected ... this is a bug'."""
    config = b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n"
    assert "too deeply" in refused(template, tmp_path, INSTALL, config)


@pytest.mark.parametrize("extra, expect", [
    (["--runtime", "gvisor", "--gvisor-version", "../../../etc"], "invalid gvisor version"),
    (["--kata-version", "../../x"], "invalid kata version"),
    (["--kata-sha256", "zz"], "not a sha256 digest"),
    (["--mirror", "/nonexistent/mirror"], "does not exist"),
    (["--mirror", "ftp://127.0.0.1/x"], "unsupported scheme"),
], ids=["gvisor-version-traversal", "kata-version-traversal", "kata-sha256-not-hex", "mirror-missing",
        "mirror-ftp"])
def test_hostile_install_options(template, tmp_path, extra, expect):
    # refused before the run lock is taken: not even the lock file appears
    assert expect in refused(template, tmp_path, INSTALL + extra)


def test_containerd_config_that_is_a_directory(template, tmp_path):
    """Regression: refused only when the config was written, after the artifacts were installed."""
    message = refused(template, tmp_path, INSTALL + ["--containerd-config", "/etc"], allowed=LOCK_TRACE)
    assert "is a directory" in message


# --- containerd rejects what our parser accepts: refused by `containerd config dump` itself -------

@pytest.mark.parametrize("config, expect", [
    (b'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  enable_selinux = "yes"\n', "containerd"),
    (b'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = 5\n', "containerd"),
], ids=["bool-as-string", "string-as-int"])
def test_config_containerd_itself_rejects(template, tmp_path, config, expect):
    # validation copies the config chain into a TMPDIR work dir: it must be gone again too
    assert expect in refused(template, tmp_path, INSTALL, config, allowed=LOCK_TRACE)


# --- nodeagent's own settings: the file, the environment, the command line ----------------------

SETTINGS_FILES = {
    "settings-bad-toml": (b"restart = \n", "is not valid TOML"),
    "settings-unknown-key": (b'restrat = "none"\n', "unknown setting 'restrat'"),
    "settings-wrong-type": (b'download_retries = "many"\n', "invalid value 'many'"),
    "settings-bad-choice": (b'restart = "sometimes"\n', "invalid restart 'sometimes'"),
    "settings-not-utf8": (b'node_name = "caf\xe9"\n', "is not valid TOML"),
    "settings-config-key": (b'config = "/etc/other.toml"\n', "unknown setting 'config'"),
    "settings-bool-garbage": (b'force = "perhaps"\n', "invalid value 'perhaps'"),
}


@pytest.mark.parametrize("case", sorted(SETTINGS_FILES))
def test_settings_file(template, tmp_path, case):
    text, expect = SETTINGS_FILES[case]
    settings_file = tmp_path / "nodeagent.toml"
    settings_file.write_bytes(text)
    assert expect in refused(template, tmp_path, ["--config", str(settings_file), *UNFLAGGED], code=64)


@pytest.mark.parametrize("name, expect", [("nope.toml", "does not exist"), (".", "cannot read config file")],
                         ids=["settings-file-missing", "settings-file-is-a-directory"])
def test_settings_file_missing_or_a_directory(template, tmp_path, name, expect):
    assert expect in refused(template, tmp_path, ["--config", str(tmp_path / name), *INSTALL], code=64)


ENVIRONMENT = {
    "env-restart-bogus": ({"NODEAGENT_RESTART": "bogus"}, "invalid restart 'bogus'", 64),
    "env-runtime-bogus": ({"NODEAGENT_RUNTIME": "docker"}, "invalid runtime 'docker'", 64),
    "env-output-bogus": ({"NODEAGENT_OUTPUT": "xml"}, "invalid output 'xml'", 64),
    "env-timeout-not-a-number": ({"NODEAGENT_DOWNLOAD_TIMEOUT": "soon"}, "invalid value 'soon'", 64),
    "env-bool-garbage": ({"NODEAGENT_SKIP_ELIGIBILITY": "maybe"}, "invalid value 'maybe'", 64),
    "env-config-missing": ({"NODEAGENT_CONFIG": "/nonexistent/nodeagent.toml"}, "does not exist", 64),
    "env-platform-bogus": ({"NODEAGENT_GVISOR_PLATFORM": "hyperv"}, "invalid gvisor-platform 'hyperv'", 64),
}


@pytest.mark.parametrize("case", sorted(ENVIRONMENT))
def test_environment(template, tmp_path, case):
    env, expect, code = ENVIRONMENT[case]
    assert expect in refused(template, tmp_path, UNFLAGGED, env=env, code=code)


def test_env_root_that_does_not_exist(template, tmp_path):
    # NODEAGENT_ROOT names a missing dir: refused, and the --root-less run touches no other root
    message = refused(template, tmp_path, INSTALL, env={"NODEAGENT_ROOT": str(tmp_path / "gone")}, with_root=False)
    assert "does not exist" in message


COMMAND_LINES = {
    "cli-unknown-option": (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    "cli-bad-output": (["-o", "yaml"], "invalid choice: 'yaml'"),
    "cli-bad-runtime": (["--runtime", "docker"], "invalid choice: 'docker'"),
    "cli-bad-restart": (["--restart", "always"], "invalid choice: 'always'"),
    "cli-health-timeout-not-a-number": (["--health-timeout", "soon"], "invalid float value: 'soon'"),
    "cli-option-without-value": (["--mirror"], "expected one argument"),
}


@pytest.mark.parametrize("case", sorted(COMMAND_LINES))
def test_command_line(template, tmp_path, case):
    extra, expect = COMMAND_LINES[case]
    assert expect in refused(template, tmp_path, [*INSTALL, *extra], code=64)


@pytest.mark.parametrize("args, expect", [
    ([], "no command given"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["bundle"], "the following arguments are required: DIR"),
], ids=["cli-no-command", "cli-unknown-command", "cli-bundle-without-dir"])
def test_command_line_without_a_command(template, tmp_path, args, expect):
    assert expect in refused(template, tmp_path, args, code=64)


def test_root_that_is_a_regular_file(template, tmp_path):
    not_a_dir = tmp_path / "root-file"
    not_a_dir.write_text("not a root\n")
    before = snapshot(tmp_path)
    message = assert_known_error(run_cli("--root", str(not_a_dir), *INSTALL), 2)
    assert diff_snapshots(before, snapshot(tmp_path)) == []
    assert "not a directory" in message


# --- hostile archives and broken downloads through `install` (bundle has its own in
# --- tests/integration/test_artifacts_cli.py): the same checks guard the path onto the node -----

GVISOR_INSTALL = ["install", "--runtime", "gvisor", "--gvisor-version", ARTIFACTS.V, "--skip-eligibility",
                  "--restart", "none"]
FAST_HTTP = {"NODEAGENT_DOWNLOAD_BACKOFF": "0.01", "NODEAGENT_DOWNLOAD_RETRIES": "2", "NO_PROXY": "127.0.0.1,localhost"}


def https_mirror(directory: Path) -> LoopbackServer:
    """The mirror over https with the suite's throwaway CA: a plain http mirror is refused for
    anything no pin covers (INTERFACE.md "Pins") before the failure a case means to reach."""
    return LoopbackServer(directory, tls=shared_tls())


def refused_from(template: Path, tmp_path: Path, srv_url: str, args: list[str], env: dict | None = None) -> str:
    trust = {"REQUESTS_CA_BUNDLE": str(shared_tls().ca)}
    return refused(template, tmp_path, [*args, "--mirror", srv_url], allowed=LOCK_TRACE,
                   env={**FAST_HTTP, **trust, **(env or {})})


@pytest.mark.parametrize("case", RELEASE_CASES)
def test_install_hostile_gvisor_member(template, tmp_path, case):
    mirror = tmp_path / "mirror"
    M.gvisor_tarball_release(mirror, ARTIFACTS.V, hostile_release(ARTIFACTS.SMALL_GVISOR, case))
    with https_mirror(mirror) as srv:
        message = refused_from(template, tmp_path, srv.url, GVISOR_INSTALL)
    assert message.startswith("refusing gvisor.tar.bz2:") and refusal_words(case) in message


def test_install_hostile_kata_member(template, tmp_path):
    mirror = tmp_path / "mirror"
    M.kata_release(mirror, "3.28.0", [*M.kata_members(), M.Member("./opt/kata/bin/qemu", "symlink", link="/usr/bin/qemu")])
    with https_mirror(mirror) as srv:
        assert "points outside the archive" in refused_from(template, tmp_path, srv.url, INSTALL)


def test_install_non_tarball(template, tmp_path):
    d = tmp_path / "mirror" / ARTIFACTS.GDIR
    d.mkdir(parents=True)
    (d / "gvisor.tar.bz2").write_text("<html><body>Access denied by proxy</body></html>\n")
    M.write_digest(d / "gvisor.tar.bz2", "sha512")
    with https_mirror(tmp_path / "mirror") as srv:
        assert "not a readable tar archive" in refused_from(template, tmp_path, srv.url, GVISOR_INSTALL)


@pytest.mark.parametrize("fault, expect", [
    ({"status": 500}, "failed after 3 attempts: HTTP 500"),
    ({"drop_after": 100}, "connection closed after 100 of"),
], ids=["http-500-after-retries", "http-truncated-body"])
def test_install_download_fails(template, tmp_path, fault, expect):
    M.gvisor_tarball_release(tmp_path / "mirror", ARTIFACTS.V, ARTIFACTS.SMALL_GVISOR)
    with https_mirror(tmp_path / "mirror") as srv:
        srv.fault(f"{ARTIFACTS.GDIR}/gvisor.tar.bz2", **fault)
        srv.range_support = False
        assert expect in refused_from(template, tmp_path, srv.url, GVISOR_INSTALL)


def test_install_http_404(template, tmp_path):
    (tmp_path / "mirror").mkdir()
    with https_mirror(tmp_path / "mirror") as srv:
        message = refused_from(template, tmp_path, srv.url, [*GVISOR_INSTALL, "--gvisor-version", "20991231.0"])
    assert "no gVisor release 20991231.0 for x86_64" in message


def test_install_wrong_digest(template, tmp_path):
    M.gvisor_tarball_release(tmp_path / "mirror", ARTIFACTS.V, ARTIFACTS.SMALL_GVISOR)
    (tmp_path / "mirror" / ARTIFACTS.GDIR / "gvisor.tar.bz2.sha512").write_text("ab" * 64 + "  gvisor.tar.bz2\n")
    with https_mirror(tmp_path / "mirror") as srv:
        assert "digest mismatch" in refused_from(template, tmp_path, srv.url, GVISOR_INSTALL)


def test_install_redirect_from_https_to_http(template, tmp_path):
    mirror = tmp_path / "mirror"
    M.gvisor_tarball_release(mirror, ARTIFACTS.V, ARTIFACTS.SMALL_GVISOR)
    tls = make_tls(tmp_path / "tls")
    with LoopbackServer(mirror) as plain, LoopbackServer(mirror, tls=tls) as secure:
        secure.fault(f"{ARTIFACTS.GDIR}/gvisor.tar.bz2", redirect=f"{plain.url}/{ARTIFACTS.GDIR}/gvisor.tar.bz2")
        message = refused_from(template, tmp_path, secure.url, GVISOR_INSTALL, env={"REQUESTS_CA_BUNDLE": str(tls.ca)})
        assert plain.requests_for(f"{ARTIFACTS.GDIR}/gvisor.tar.bz2") == []
    assert "to the insecure http://127.0.0.1" in message


# --- the Kubernetes API (the loopback stand-in, tests/support/fake_apiserver.py: no
# --- kube-apiserver can be had here): refusals leave the root and the Node object alone ---------

NODE = "/api/v1/nodes/node-a"
API_CASES = {
    "api-wrong-token": ({"user": {"token": "not-the-token"}}, None, "401"),
    "api-wrong-ca": ({"ca": "other"}, None, "certificate"),
    "api-forbidden": ({}, (403, {"method": "PATCH"}), "403"),
    "api-5xx-after-retries": ({}, (500, {}), "500"),
    "api-unknown-node": ({"node": "ghost"}, None, "node 'ghost' does not exist"),
}


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_kubernetes_api_refusal(tmp_path, apiserver, pki, case):  # noqa: F811
    how, fault, expect = API_CASES[case]
    apiserver.put_object(NODE, {"apiVersion": "v1", "kind": "Node", "metadata": {"labels": {"zone": "a"}},
                                "status": {"nodeInfo": {"kubeletVersion": "v1.31.0"}}})
    node_before = json.dumps(apiserver.object(NODE), sort_keys=True)
    ca = pki.other_ca_cert if how.get("ca") == "other" else pki.ca_cert
    kc = tmp_path / "kubeconfig"
    kc.write_text(kubeconfig_text(apiserver.url, user=how.get("user", {"token": TOKEN}),
                                  cluster_extra={"certificate-authority": str(ca)}))
    if fault:
        apiserver.inject(fault[0], times=50, **fault[1])
    root = tmp_path / "root"
    root.mkdir()
    before = snapshot(root)
    proc = run_cli("labels", "--apply", "--root", str(root), "--kubeconfig", str(kc),
                   "--node-name", how.get("node", "node-a"), env={"NODEAGENT_DOWNLOAD_BACKOFF": "0.01"}, timeout=180)
    assert expect in assert_known_error(proc, 2)
    assert diff_snapshots(before, snapshot(root)) == []
    assert json.dumps(apiserver.object(NODE), sort_keys=True) == node_before
