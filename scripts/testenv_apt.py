#!/usr/bin/env python3
"""Apt helpers for scripts/setup-test-env: which Debian archive this machine uses, and which build
of each series the test environment takes. Standard library only (it runs before any pip install).

Nothing here names an archive host or an exact Debian revision: unstable keeps only its current
revision and trixie gets point releases, so the newest build of each series is taken, minus the
builds known to be bad (a rule, below), and the script prints what it got.

    testenv_apt.py sources SUITE...      # private sources.list lines for SUITEs on this machine's archive
    apt-cache madison PKG | testenv_apt.py pick SERIES   # prints "VERSION SUITE" of the build to use
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Series:
    """A line of builds the tests need: a package and a pattern its upstream version must match."""

    package: str
    upstream: str  # regex, matched at the start of the upstream version, followed by ~, + or the end


@dataclass(frozen=True)
class KnownBad:
    """Builds never to take: one upstream version at one Debian revision, with any binNMU (+bN)."""

    package: str
    upstream: str
    revision: str
    why: str


SERIES = {
    "containerd-1.7": Series("containerd", r"1\.7\.\d+"),
    "containerd-2": Series("containerd", r"2\.\d+\.\d+"),
    "runsc-2024": Series("runsc", r"0\.0~2024\d{4}(?:\.\d+)?"),
}

KNOWN_BAD = (
    # Seen on this kind of machine: 6 of 8 pods died (see shared/notes/test-environment.md).
    KnownBad("runsc", "0.0~20240729.0", "7", "its sentry panics at random"),
)


@dataclass(frozen=True)
class Source:
    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    signed_by: str | None


def _one_line_sources(text: str) -> list[Source]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        options: dict[str, str] = {}
        match = re.match(r"(\S+)\s+\[([^\]]*)\]\s+(.*)", line)
        if match:
            kind, opts, rest = match.groups()
            options = dict(o.split("=", 1) for o in opts.split() if "=" in o)
        else:
            kind, _, rest = line.partition(" ")
        words = rest.split()
        if len(words) >= 2:
            out.append(Source((kind,), (words[0],), (words[1],), options.get("signed-by")))
    return out


def _deb822_sources(text: str) -> list[Source]:
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#"):
                continue
            if line[:1].isspace() and key:  # continuation (e.g. an inline key block)
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if not fields or fields.get("enabled", "yes").lower() == "no":
            continue
        signed_by = fields.get("signed-by")
        if signed_by and "\n" in signed_by:  # an inline key, not a keyring path: apt's defaults apply
            signed_by = None
        out.append(Source(tuple(fields.get("types", "").split()), tuple(fields.get("uris", "").split()),
                          tuple(fields.get("suites", "").split()), signed_by))
    return out


def machine_sources(etc: Path = Path("/etc/apt")) -> list[Source]:
    """Every source entry of the machine, in apt's order: sources.list, then sources.list.d/ sorted."""
    found = []
    if (etc / "sources.list").is_file():
        found += _one_line_sources((etc / "sources.list").read_text())
    for path in sorted((etc / "sources.list.d").glob("*")):
        if path.suffix == ".list":
            found += _one_line_sources(path.read_text())
        elif path.suffix == ".sources":
            found += _deb822_sources(path.read_text())
    return found


def os_codename(os_release: Path = Path("/etc/os-release")) -> str:
    for line in os_release.read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise SystemExit("error: /etc/os-release names no VERSION_CODENAME\nhint: this script expects a Debian machine")


def debian_archive(sources: list[Source], codename: str) -> Source:
    """The entry that serves this machine's own suite (not -security, not -updates): its archive."""
    for source in sources:
        if "deb" in source.types and codename in source.suites and source.uris:
            return source
    raise SystemExit(f"error: apt on this machine has no deb source for its own suite {codename!r}\n"
                     "hint: add the Debian mirror you use to /etc/apt/sources.list(.d) and run apt-get update")


def sources_lines(archive: Source, suites: list[str]) -> str:
    opts = f"[signed-by={archive.signed_by}] " if archive.signed_by else ""
    return "".join(f"deb {opts}{archive.uris[0]} {suite} main\n" for suite in suites)


def split_version(version: str) -> tuple[str, str]:
    """(upstream, Debian revision) of a Debian version; the epoch stays on the upstream part."""
    upstream, _, revision = version.rpartition("-")
    return (upstream, revision) if upstream else (version, "")


def is_known_bad(package: str, version: str) -> KnownBad | None:
    upstream, revision = split_version(version)
    for bad in KNOWN_BAD:
        if bad.package == package and bad.upstream == upstream and revision.split("+")[0] == bad.revision:
            return bad
    return None


def in_series(series: Series, version: str) -> bool:
    upstream = split_version(version)[0].split(":")[-1]
    return re.match(series.upstream + r"(?:[~+]|$)", upstream) is not None


def _dpkg_compare(a: str, b: str) -> int:
    if a == b:
        return 0
    return -1 if subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0 else 1


def madison(text: str) -> list[tuple[str, str, str]]:
    """(package, version, suite) rows of `apt-cache madison` output."""
    rows = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2].endswith("Packages"):
            rows.append((parts[0], parts[1], parts[2].split()[1].split("/")[0]))
    return rows


def pick(series: Series, rows: list[tuple[str, str, str]]) -> tuple[str, str]:
    """The newest (version, suite) of `series` among `rows` that is not a known-bad build."""
    usable = [(v, s) for p, v, s in rows
              if p == series.package and in_series(series, v) and not is_known_bad(p, v)]
    if not usable:
        seen = ", ".join(v for p, v, _ in rows if p == series.package) or "none"
        raise SystemExit(f"error: no usable {series.package} build matches {series.upstream} (available: {seen})\n"
                         "hint: the suites moved past this series; update SERIES or KNOWN_BAD in scripts/testenv_apt.py")
    return max(usable, key=functools.cmp_to_key(lambda a, b: _dpkg_compare(a[0], b[0])))


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "sources":
        sys.stdout.write(sources_lines(debian_archive(machine_sources(), os_codename()), argv[1:]))
        return 0
    if len(argv) == 2 and argv[0] == "pick" and argv[1] in SERIES:
        version, suite = pick(SERIES[argv[1]], madison(sys.stdin.read()))
        print(version, suite)
        return 0
    print(__doc__.split("\n\n")[-1], file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
