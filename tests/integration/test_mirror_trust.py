"""A mirror must not vouch for its own files (security review H1, M1, M3, L5), through the real CLI.

Mirrors are REAL HTTP(S) servers on 127.0.0.1 (tests/support/http_server.py); installs go into
temp roots holding a kind node's containerd config. The gVisor "releases" here are self-made
tarballs: the attacker's, in the H1 cases. Their shim is a stand-in script (no real one exists
here, see shared/notes/test-environment.md); nothing in these tests needs it to run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support import mirror_builder as M
from tests.support.cli import assert_known_error, run_cli
from tests.support.http_server import LoopbackServer, shared_tls
from tests.support.tree import diff_snapshots, snapshot

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
ENV = {"NODEAGENT_DOWNLOAD_BACKOFF": "0.01", "NODEAGENT_DOWNLOAD_RETRIES": "1", "NO_PROXY": "127.0.0.1,localhost",
       "REQUESTS_CA_BUNDLE": str(shared_tls().ca)}
FAKE = "20990101.0"  # the attacker's "release"
GDIR = f"gvisor/{FAKE}/x86_64"
TARBALL = f"{GDIR}/gvisor.tar.bz2"
EVIL = [M.Member("./runsc", data=b"#!/bin/sh\necho 'runsc version release-20990101.0 (not gVisor)'\n"),
        M.Member("./containerd-shim-runsc-v1", data=b"#!/bin/sh\necho stand-in shim\n")]


@pytest.fixture
def root(tmp_path) -> Path:
    """A node root with kind's containerd config (v2), as the installer finds it."""
    r = tmp_path / "root"
    (r / "etc/containerd").mkdir(parents=True)
    shutil.copyfile(CORPUS / "kind-node-v2.toml", r / "etc/containerd/config.toml")
    return r


@pytest.fixture
def evil_mirror(tmp_path) -> Path:
    """A mirror serving a self-made tarball and, next to it, its own matching .sha512."""
    m = tmp_path / "mirror"
    M.gvisor_tarball_release(m, FAKE, EVIL)
    return m


def install(root: Path, mirror: str, *extra: str, env: dict | None = None):
    return run_cli("--root", str(root), "install", "--skip-eligibility", "--runtime", "gvisor", "--restart", "none",
                   "--mirror", mirror, "--gvisor-version", FAKE, *extra, env={**ENV, **(env or {})}, timeout=120)


LOCK = {"added run", "added run/nodeagent.lock", "changed run (mtime)"}


def lock_trace(change: str) -> bool:
    """The run lock: created (moving its directory's mtime), or reused (the holder's pid in it)."""
    return change in LOCK or change.startswith("changed run/nodeagent.lock ")


def refused(root: Path, *args: str, env: dict | None = None) -> str:
    """The error contract, and the root byte-identical afterwards (the bad-input catalogue).

    A refusal that comes after the run lock was taken (a download that failed its pin) leaves
    the lock file, which is meant to stay; everything else must be as it was.
    """
    before = snapshot(root)
    message = assert_known_error(install(root, *args, env=env), 2)
    assert [d for d in diff_snapshots(before, snapshot(root)) if not lock_trace(d)] == []
    return message


def sha512(path: Path) -> str:
    return hashlib.sha512(path.read_bytes()).hexdigest()


# -- H1: a plain http mirror vouching for itself -----------------------------------------------
def test_http_mirror_serving_its_own_checksum_is_refused_without_pins(root, evil_mirror):
    with LoopbackServer(evil_mirror) as srv:
        before = snapshot(root)
        proc = install(root, srv.url)
        message = assert_known_error(proc, 2)
        assert diff_snapshots(before, snapshot(root)) == []
        assert srv.seen == []  # refused before a single request, let alone a write
    assert f"refusing {TARBALL} from the plain http mirror" in message
    assert "--pins" in proc.stderr.splitlines()[-1]


def test_http_mirror_with_a_matching_pin_installs(root, evil_mirror, tmp_path):
    pins = tmp_path / "pins"
    pins.write_text(f"{sha512(evil_mirror / TARBALL)}  {TARBALL}\n")
    with LoopbackServer(evil_mirror) as srv:
        proc = install(root, srv.url, "--pins", str(pins))
        assert not any(s.path.endswith(".sha512") for s in srv.seen)  # the pin is the word, not the mirror
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(root / "usr/local/bin/runsc") == f"/opt/nodeagent/gvisor/{FAKE}/runsc"


def test_pin_wins_over_a_matching_mirror_checksum(root, evil_mirror, tmp_path):
    """The attacker swapped tarball and .sha512 together; the operator's pin names the real one."""
    pins = tmp_path / "pins"
    pins.write_text(f"{'ab' * 64}  ./{TARBALL}\n")
    with LoopbackServer(evil_mirror) as srv:
        message = refused(root, srv.url, "--pins", str(pins))
    assert message.startswith(f"digest mismatch for {srv.url}/{TARBALL}")


def test_pin_wins_over_an_https_mirror_checksum_too(root, evil_mirror, tmp_path):
    pins = tmp_path / "pins"
    pins.write_text(f"{'cd' * 64}  {TARBALL}\n")
    with LoopbackServer(evil_mirror, tls=shared_tls()) as srv:
        assert "digest mismatch" in refused(root, srv.url, "--pins", str(pins))


def test_pins_from_the_settings_file_and_environment(root, evil_mirror, tmp_path):
    pins = tmp_path / "pins"
    pins.write_text(f"{'ef' * 64}  {TARBALL}\n")
    config = tmp_path / "nodeagent.toml"
    config.write_text(f'pins = "{pins}"\n')
    with LoopbackServer(evil_mirror) as srv:
        assert "digest mismatch" in refused(root, srv.url, "--config", str(config))
        assert "digest mismatch" in refused(root, srv.url, env={"NODEAGENT_PINS": str(pins)})


def test_kata_over_plain_http_needs_a_pin(root, tmp_path):
    m = tmp_path / "mirror"
    tarball = M.kata_release(m, "3.28.0")
    with LoopbackServer(m) as srv:
        before = snapshot(root)
        proc = run_cli("--root", str(root), "install", "--skip-eligibility", "--runtime", "kata", "--restart", "none",
                       "--mirror", srv.url, env=ENV)
        assert "refusing kata/3.28.0/kata-static-3.28.0-amd64.tar.zst" in assert_known_error(proc, 2)
        assert diff_snapshots(before, snapshot(root)) == []
        pins = tmp_path / "pins"
        pins.write_text(f"{hashlib.sha256(tarball.read_bytes()).hexdigest()}  kata/3.28.0/{tarball.name}\n")
        proc = run_cli("--root", str(root), "install", "--skip-eligibility", "--runtime", "kata", "--restart", "none",
                       "--mirror", srv.url, "--pins", str(pins), env=ENV)
    assert proc.returncode == 0, proc.stderr


def test_a_catalog_pin_for_one_kata_tarball_does_not_vouch_for_another(root, tmp_path):
    """3.7.0's .tar.xz is in the pinned catalog; an http mirror offering a .tar.zst with its own
    .sha256 instead must not get that tarball accepted on its own word."""
    m = tmp_path / "mirror"
    M.kata_release(m, "3.7.0", ext="tar.zst")
    with LoopbackServer(m) as srv:
        before = snapshot(root)
        proc = run_cli("--root", str(root), "install", "--skip-eligibility", "--runtime", "kata", "--restart", "none",
                       "--kata-version", "3.7.0", "--mirror", srv.url, env=ENV)
        message = assert_known_error(proc, 2)
        assert [d for d in diff_snapshots(before, snapshot(root)) if not lock_trace(d)] == []  # found after the lock
    assert message.startswith("refusing kata/3.7.0/kata-static-3.7.0-amd64.tar.zst from the plain http mirror")
    assert "--pins" in proc.stderr.splitlines()[-1]


BAD_PINS = {
    "short-hex": "abc123  gvisor/20990101.0/x86_64/gvisor.tar.bz2\n",
    "absolute-path": f"{'ab' * 64}  /gvisor/20990101.0/x86_64/gvisor.tar.bz2\n",
    "dot-dot": f"{'ab' * 64}  gvisor/../../etc/shadow\n",
    "one-space": f"{'ab' * 64} gvisor/20990101.0/x86_64/gvisor.tar.bz2\n",
    "twice-differently": f"{'ab' * 64}  {TARBALL}\n{'cd' * 64}  {TARBALL}\n",
    "not-utf8": b"\xff\xfe\n",
    "missing": None,
}


@pytest.mark.parametrize("case", sorted(BAD_PINS))
def test_malformed_pins_file_is_refused(root, evil_mirror, tmp_path, case):
    pins = tmp_path / "pins"
    content = BAD_PINS[case]
    if content is not None:
        pins.write_bytes(content if isinstance(content, bytes) else content.encode())
    with LoopbackServer(evil_mirror, tls=shared_tls()) as srv:
        message = refused(root, srv.url, "--pins", str(pins))
        assert srv.seen == []
    assert f"pins file {pins}" in message


def test_bundle_over_plain_http_needs_pins_and_writes_its_own(tmp_path, evil_mirror):
    out = tmp_path / "bundle"
    with LoopbackServer(evil_mirror) as srv:
        args = ("bundle", "--runtime", "gvisor", "--gvisor-version", FAKE, "--arch", "amd64", "--mirror", srv.url)
        before = snapshot(tmp_path)
        proc = run_cli(*args, str(out), env=ENV)
        assert_known_error(proc, 2)
        assert "--pins" in proc.stderr.splitlines()[-1]
        assert diff_snapshots(before, snapshot(tmp_path)) == []  # no DIR, no DIR.pins
        pins = tmp_path / "operator.pins"
        pins.write_text(f"{sha512(evil_mirror / TARBALL)}  {TARBALL}\n")
        proc = run_cli(*args, "--pins", str(pins), "-o", "json", str(out), env=ENV)
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / "bundle.pins"
    assert json.loads(proc.stdout)["pins"] == str(written)
    assert written.read_text() == f"{sha512(out / TARBALL)}  {TARBALL}\n"


# -- H1: a downloaded binary learns its version as nobody, offline -----------------------------
def test_latest_runsc_is_run_as_nobody_without_network_or_capabilities(root, tmp_path):
    report_dir = Path(tempfile.mkdtemp(prefix="nodeagent-report-"))
    try:
        report_dir.chmod(0o1777)  # whoever runs the fake runsc can write its report here
        report = report_dir / "report"
        runsc = (
            "#!/bin/sh\n"
            f"{{ grep -E '^(Uid|Gid|Groups|CapEff|CapPrm|CapBnd|NoNewPrivs):' /proc/self/status\n"
            "  echo \"ifaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' ')\"\n"
            "  echo \"userns: $(readlink /proc/self/ns/user)\"\n"
            f"}} > {report}\n"
            "echo 'runsc version release-20990101.0'\n"
        ).encode()
        m = tmp_path / "mirror"
        M.gvisor_tarball_release(m, "latest", [M.Member("./runsc", data=runsc), EVIL[1]])
        with LoopbackServer(m, tls=shared_tls()) as srv:
            proc = run_cli("--root", str(root), "install", "--skip-eligibility", "--runtime", "gvisor",
                           "--restart", "none", "--mirror", srv.url, "-o", "json", env=ENV)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["artifacts"][0]["version"] == FAKE  # the version was learnt
        facts = dict(line.split(":", 1) for line in report.read_text().splitlines())
        facts = {k: v.split() for k, v in facts.items()}
    finally:
        shutil.rmtree(report_dir, ignore_errors=True)
    assert facts["Uid"] == ["65534"] * 4 and facts["Gid"] == ["65534"] * 4 and facts["Groups"] == []
    assert int(facts["CapEff"][0], 16) == int(facts["CapPrm"][0], 16) == 0
    # A user namespace of its own: whatever its bounding set says there (a new user namespace
    # starts with a full one), capabilities in it reach only that namespace's own objects, never
    # the node's.
    assert facts["userns"] != [os.readlink("/proc/self/ns/user")]
    assert facts["NoNewPrivs"] == ["1"]
    assert facts["ifaces"] == ["lo"]  # a network namespace of its own: nothing to reach


# -- M1: links planted in a bundle directory ------------------------------------------------------
def as_nobody(*argv: str) -> None:
    subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", *argv], check=True)


@pytest.mark.parametrize("how", ["owned-by-nobody", "world-writable"])
def test_bundle_refuses_a_directory_where_nobody_planted_a_link(tmp_path, evil_mirror, how):
    base = Path(tempfile.mkdtemp(prefix="nodeagent-m1-"))
    try:
        base.chmod(0o755)  # nobody can reach the bundle dir, not the root-only file
        secret = base / "root-only"
        secret.write_bytes(b"root's file\n")
        secret.chmod(0o600)
        out = base / "bundle"
        out.mkdir()
        if how == "owned-by-nobody":
            os.chown(out, 65534, 65534)
        else:
            out.chmod(0o777)
        # where bundle writes the download before it is verified: <file>.nodeagent-new.partial
        as_nobody("mkdir", "-p", str(out / GDIR))
        as_nobody("ln", "-s", str(secret), str(out / GDIR / "gvisor.tar.bz2.nodeagent-new.partial"))
        before = snapshot(out)
        with LoopbackServer(evil_mirror, tls=shared_tls()) as srv:
            proc = run_cli("bundle", "--runtime", "gvisor", "--gvisor-version", FAKE, "--arch", "amd64",
                           "--mirror", srv.url, str(out), env=ENV)
        assert secret.read_bytes() == b"root's file\n" and secret.stat().st_mode & 0o777 == 0o600
        message = assert_known_error(proc, 2)
        assert diff_snapshots(before, snapshot(out)) == []
        assert not (base / "bundle.pins").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert f"bundle directory {out}" in message and ("uid 65534" in message or "writable by others" in message)


def test_fetch_never_writes_through_a_link_at_its_partial_name(tmp_path, evil_mirror, monkeypatch):
    """Defence in depth below bundle's directory check: a link at `<dest>.partial` is replaced, not followed."""
    from nodeagent.artifacts.digest import Digest
    from nodeagent.artifacts.download import Fetcher, FetchOptions
    from nodeagent.artifacts.sources import Location

    secret = tmp_path / "root-only"
    secret.write_bytes(b"root's file\n")
    dest = tmp_path / "out" / "gvisor.tar.bz2"
    dest.parent.mkdir()
    (dest.parent / "gvisor.tar.bz2.partial").symlink_to(secret)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with LoopbackServer(evil_mirror) as srv:
        fetcher = Fetcher(FetchOptions(retries=0, backoff=0.01))
        try:
            fetcher.fetch(Location(url=f"{srv.url}/{TARBALL}", allow_http=True), dest,
                          Digest("sha512", sha512(evil_mirror / TARBALL)))
        finally:
            fetcher.close()
        assert [s.range for s in srv.requests_for(TARBALL)] == [None]  # nothing "resumed" from the link's target
    assert secret.read_bytes() == b"root's file\n"
    assert dest.read_bytes() == (evil_mirror / TARBALL).read_bytes() and not dest.is_symlink()


# -- M3: credentials in mirror URLs -------------------------------------------------------------
SECRETS = ("hunter2", "S3CRET-TOKEN", "AMZSIG", "sigvalue")


def _secret_url(url: str) -> str:
    return url.replace("://", "://operator:hunter2@") + "/base?token=S3CRET-TOKEN&X-Amz-Signature=AMZSIG&sig=sigvalue"


def test_credentials_in_the_mirror_url_never_reach_errors_or_logs(root, evil_mirror, tmp_path):
    base = tmp_path / "served"
    shutil.copytree(evil_mirror, base / "base")
    pins = M.write_pins(base / "base", tmp_path / "pins")
    with LoopbackServer(base) as srv:
        srv.fault(f"base/{TARBALL}", status=500)
        fail_500 = install(root, _secret_url(srv.url), "--pins", str(pins))
        # unknown Kata release (404s for its digest file and the tarball itself), pinned by flag
        fail_404 = run_cli("--root", str(root), "install", "--skip-eligibility", "--runtime", "kata",
                           "--restart", "none", "--mirror", _secret_url(srv.url), "--kata-sha256", "0" * 64, env=ENV)
        # plain http without a pin: refused, and the refusal names the mirror
        unpinned = install(root, _secret_url(srv.url))
    for name, proc in (("500", fail_500), ("404", fail_404), ("unpinned", unpinned)):
        for secret in SECRETS:
            assert secret not in proc.stderr + proc.stdout, (name, proc.stderr)
    messages = {name: assert_known_error(proc, 2) for name, proc in (("500", fail_500), ("404", fail_404), ("unpinned", unpinned))}
    assert any(s.path.startswith("/base/gvisor/") for s in srv.seen)  # the URL worked: the path before the query
    assert "http://***@127.0.0.1" in messages["500"] and "token=***" in messages["500"] and "HTTP 500" in messages["500"]
    assert "no Kata 3.28.0 tarball" in messages["404"] and "http://***@127.0.0.1" in messages["404"]
    assert "plain http mirror http://***@127.0.0.1" in messages["unpinned"]
    # the retry warnings went to the JSON log, redacted as well
    logged = [json.loads(line) for line in fail_500.stderr.splitlines() if line.startswith("{")]
    assert any(entry.get("event") == "download failed, retrying" and "***" in entry["url"] for entry in logged)


# -- L5: `$` matches before a trailing newline ---------------------------------------------------
@pytest.mark.parametrize("args, env, words", [
    (("--gvisor-version", "20240729.0\n"), {}, "invalid gvisor version"),
    (("--runtime", "kata", "--kata-version", "3.28.0\n"), {}, "invalid kata version"),
    ((), {"NODEAGENT_GVISOR_HANDLER": "runsc\n"}, "invalid handler name"),
], ids=["gvisor-version", "kata-version", "handler"])
def test_values_with_a_trailing_newline_are_refused(root, args, env, words):
    before = snapshot(root)
    proc = run_cli("--root", str(root), "install", "--skip-eligibility", "--restart", "none", *args, env={**ENV, **env})
    assert words in assert_known_error(proc, 2)
    assert diff_snapshots(before, snapshot(root)) == []
