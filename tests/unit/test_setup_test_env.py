"""scripts/setup-test-env's choices: the archive comes from the machine's apt sources, each series
takes its newest build minus known-bad ones (by rule), and no script pins a host or a revision.

The whole script was run for real against a temp NODEAGENT_TESTENV (see the testground note); these
tests pin the rules it relies on, with real `dpkg --compare-versions` ordering.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("testenv_apt", ROOT / "scripts/testenv_apt.py")
testenv_apt = sys.modules["testenv_apt"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(testenv_apt)

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MADISON = """\
containerd | 2.2.0~rc1-1 | http://mirror.example/debian sid/main amd64 Packages
containerd | 2.1.9+ds1-5 | http://mirror.example/debian sid/main amd64 Packages
containerd | 1.7.24~ds1-6+deb13u1 | http://mirror.example/debian trixie/main amd64 Packages
containerd | 1.7.24~ds1-6 | http://mirror.example/debian trixie/main amd64 Packages
containerd | 1.7.3-1 | http://mirror.example/debian trixie/main amd64 Packages
     runsc | 0.0~20240729.0-7+b1 | http://mirror.example/debian sid/main amd64 Packages
     runsc | 0.0~20240729.0-4+b7 | http://mirror.example/debian trixie/main amd64 Packages
     runsc | 0.0~20221219.0-1 | http://mirror.example/debian bookworm/main amd64 Packages
"""


def _etc(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_deb822_archive_of_own_suite_keeps_its_keyring(tmp_path):
    etc = _etc(tmp_path, {"sources.list.d/debian.sources": f"""\
Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Signed-By: {KEYRING}

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb
# a comment inside the stanza
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: {KEYRING}
"""})
    archive = testenv_apt.debian_archive(testenv_apt.machine_sources(etc), "bookworm")
    assert testenv_apt.sources_lines(archive, ["trixie", "sid"]) == (
        f"deb [signed-by={KEYRING}] http://mirror.example/debian trixie main\n"
        f"deb [signed-by={KEYRING}] http://mirror.example/debian sid main\n")


def test_one_line_sources_list_first_and_disabled_stanzas_skipped(tmp_path):
    etc = _etc(tmp_path, {
        "sources.list": "# deb http://old.example/debian bookworm main\n"
                        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main contrib\n",
        "sources.list.d/other.sources": "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n",
    })
    archive = testenv_apt.debian_archive(testenv_apt.machine_sources(etc), "bookworm")
    assert (archive.uris, archive.signed_by) == (("http://one.example/debian",), "/k.gpg")


def test_no_source_for_own_suite_is_a_clear_error(tmp_path):
    etc = _etc(tmp_path, {"sources.list.d/x.list": "deb http://x.example/debian bookworm-security main\n"})
    with pytest.raises(SystemExit, match="no deb source for its own suite 'bookworm'"):
        testenv_apt.debian_archive(testenv_apt.machine_sources(etc), "bookworm")


def test_this_machines_sources_name_a_debian_archive():
    archive = testenv_apt.debian_archive(testenv_apt.machine_sources(), testenv_apt.os_codename())
    assert archive.uris and "deb" in archive.types


@pytest.mark.parametrize("series, expected", [
    ("containerd-1.7", ("1.7.24~ds1-6+deb13u1", "trixie")),  # the point release beats its base
    ("containerd-2", ("2.2.0~rc1-1", "sid")),                 # the newest 2.x, whatever its minor
    ("runsc-2024", ("0.0~20240729.0-4+b7", "trixie")),        # sid's -7 build is known-bad
])
def test_pick_takes_the_newest_usable_build(series, expected):
    assert testenv_apt.pick(testenv_apt.SERIES[series], testenv_apt.madison(MADISON)) == expected


def test_known_bad_rule_covers_every_binnmu_of_the_revision():
    assert testenv_apt.is_known_bad("runsc", "0.0~20240729.0-7")
    assert testenv_apt.is_known_bad("runsc", "0.0~20240729.0-7+b3")
    assert not testenv_apt.is_known_bad("runsc", "0.0~20240729.0-8")
    assert not testenv_apt.is_known_bad("runsc", "0.0~20240729.0-17")


def test_only_bad_builds_left_is_a_clear_error():
    rows = testenv_apt.madison(MADISON.splitlines()[5] + "\n")
    with pytest.raises(SystemExit, match="no usable runsc build"):
        testenv_apt.pick(testenv_apt.SERIES["runsc-2024"], rows)


def test_no_script_names_an_archive_host_or_a_moving_revision():
    """The project's before-stop check, as a test: a fresh machine must not depend on either."""
    files = [p for p in (ROOT / "scripts").iterdir() if p.is_file()] + [ROOT / ".ci/run"]
    revision = re.compile(r"^[^#]*[0-9]+(\.[0-9]+)+[~+][0-9a-z.~+]*-[0-9]+")
    host = re.compile(r"^[^#]*https?://[A-Za-z0-9.-]+\.[a-z]{2,}/debian")
    hits = [f"{p.name}: {line}" for p in files for line in p.read_text().splitlines()
            if revision.search(line) or host.search(line)]
    assert hits == []
