import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TESTENV = Path(os.environ.get("NODEAGENT_TESTENV", "/opt/nodeagent-testenv"))
FIXTURES = ROOT / "tests" / "fixtures"
CORPUS = FIXTURES / "corpus"  # copied from shared/corpus/containerd-configs (see SOURCES.md)

# Real-daemon fixtures: `containerd_factory` (per test) and `systemd_node` (one booted node per session).
pytest_plugins = ["tests.support.containerd_daemon", "tests.support.systemd_node",
                  "tests.catalogue.plugin"]  # marks bad-input tests `bad_input` (counted for the README)


@pytest.fixture(autouse=True)
def cli_tmpdir(request: pytest.FixtureRequest):
    """Each test's own TMPDIR for the CLI runs it makes (tests/support/cli.py passes it on). A
    bad-input test must leave it as empty as it found it: a refused command leaves no temp files.

    Not under pytest's basetemp: that tree is mode 0700, and `runsc do` (nodeagent verify) cannot
    start a sandbox whose TMPDIR lies below a directory only root may enter."""
    from tests.support import cli
    from tests.support.tree import diff_snapshots, snapshot

    cli.TMPDIR = Path(tempfile.mkdtemp(prefix="nodeagent-test-TMPDIR-"))
    cli.TMPDIR.chmod(0o755)
    try:
        yield cli.TMPDIR
        if request.node.get_closest_marker("bad_input"):
            assert diff_snapshots({}, snapshot(cli.TMPDIR)) == [], f"left in TMPDIR {cli.TMPDIR}"
    finally:
        shutil.rmtree(cli.TMPDIR, ignore_errors=True)
        cli.TMPDIR = None


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


def _version_line(binary: Path) -> str:
    """First line of `binary --version`, plus the Debian build setup-test-env recorded next to it."""
    if not binary.exists():
        return f"{binary}: missing (run scripts/setup-test-env)"
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30).stdout
    recorded = next((p / "VERSION" for p in binary.parents if (p / "VERSION").is_file()), None)
    build = f" [deb {recorded.read_text().strip()}]" if recorded else ""
    return f"{binary}: {(out.splitlines() or ['?'])[0]}{build}"


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The real components this run uses: the newest builds setup-test-env found, so say which."""
    from tests.support.containerd_daemon import BINDIRS

    binaries = [bindir / "containerd" for bindir in BINDIRS.values()]
    binaries += [Path("/usr/bin/runsc"), TESTENV / "runsc-2024/usr/bin/runsc"]
    return [_version_line(b) for b in binaries]
