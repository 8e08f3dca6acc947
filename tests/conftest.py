import os
import sys
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


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
