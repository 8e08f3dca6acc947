"""Tests mirror the package (issue 12 §7): a product module with logic has its unit tests in
tests/unit/<package>/test_<module>.py (a package's __init__.py: tests/unit/<package>/test_<package>.py).
One module's tests may be split by topic as test_<module>_<topic>.py (test_doctor_config_clashes.py).

A module "has logic" when it defines a function or a class. Two explicit lists excuse a module:
GLUE (nothing of its own to test alone; each entry says why and where its behaviour is tested)
and OWED (unit tests not written yet; each entry says what exercises the module today). OWED may
only shrink: once a module gets its test file, the check below fails until its entry is removed.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

GLUE = {
    "artifacts/__init__.py": "lazy (PEP 562) re-exports of api/bundle names; their tests: tests/unit/artifacts/",
    "commands/bundle.py": "formats write_bundle's result as a table; run through the CLI in "
                          "tests/integration/test_artifacts_cli.py",
    "commands/converge.py": "one-line wrappers over converge (tests/unit/test_converge.py); run through the CLI "
                            "in tests/unit/containerd/test_bad_input.py",
    "commands/doctor.py": "maps doctor's overall status to the exit code; doctor and its exit codes: "
                          "tests/unit/test_doctor.py",
    "commands/kube.py": "formats labels/RuntimeClasses and calls kube/ with the CLI's retry budget; run through "
                        "the CLI in tests/integration/test_kube_objects.py",
    "commands/version.py": "prints nodeagent's version and two settings; run in tests/unit/test_cli.py",
    "logsetup.py": "structlog configuration only; its output format is seen by every CLI test",
}

OWED: dict[str, str] = {
    # Empty since issue 12 was resolved: every module with logic has its mirrored unit tests. A
    # module may be put here only with what exercises it today, and leaves when its file exists.
}


def has_logic(source: str) -> bool:
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
               for node in ast.parse(source).body)


def mirrored(rel: str) -> tuple[str, str]:
    """(directory under tests/unit, module name) that `rel` (a path inside nodeagent/) mirrors to."""
    parts = rel.split("/")
    name = parts[-2] if parts[-1] == "__init__.py" and len(parts) > 1 else parts[-1].removesuffix(".py")
    return "/".join(parts[:-1]), name


def unit_tests_of(unit: Path, rel: str) -> list[Path]:
    directory, name = mirrored(rel)
    here = unit / directory if directory else unit
    return sorted([*here.glob(f"test_{name}.py"), *here.glob(f"test_{name}_*.py")])


def modules_with_logic(package: Path) -> list[str]:
    return sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py")
                  if p.relative_to(package).as_posix() != "__init__.py" and has_logic(p.read_text()))


def untested(package: Path, unit: Path, excused: set[str]) -> list[str]:
    return [rel for rel in modules_with_logic(package) if rel not in excused and not unit_tests_of(unit, rel)]


def stale_excuses(package: Path, unit: Path, glue: dict[str, str], owed: dict[str, str]) -> list[str]:
    """Entries naming no module with logic, or an OWED module that has its unit test file now."""
    logic = set(modules_with_logic(package))
    out = [f"{rel}: no such module with logic" for rel in sorted({*glue, *owed}) if rel not in logic]
    out += [f"{rel}: has {', '.join(p.name for p in unit_tests_of(unit, rel))} now; take it off OWED"
            for rel in sorted(owed) if rel in logic and unit_tests_of(unit, rel)]
    out += [f"{rel}: in both GLUE and OWED" for rel in sorted(set(glue) & set(owed))]
    return out


def test_every_module_with_logic_has_its_mirrored_unit_tests():
    missing = untested(REPO / "nodeagent", REPO / "tests/unit", set(GLUE) | set(OWED))
    assert missing == [], "write tests/unit/<package>/test_<module>.py for: " + ", ".join(missing)


def test_the_excuses_are_current():
    assert stale_excuses(REPO / "nodeagent", REPO / "tests/unit", GLUE, OWED) == []


def test_the_check_finds_what_it_looks_for(tmp_path):
    package, unit = tmp_path / "nodeagent", tmp_path / "unit"
    for rel, text in {"__init__.py": "", "a.py": "def f():\n    pass\n", "consts.py": "X = 1\n",
                      "sub/__init__.py": "class C:\n    pass\n", "sub/b.py": "async def g():\n    pass\n",
                      "sub/c.py": "def h():\n    pass\n"}.items():
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text(text)
    (unit / "sub").mkdir(parents=True)
    (unit / "sub/test_b_topic.py").write_text("")
    assert modules_with_logic(package) == ["a.py", "sub/__init__.py", "sub/b.py", "sub/c.py"]
    assert untested(package, unit, set()) == ["a.py", "sub/__init__.py", "sub/c.py"]
    (unit / "test_a.py").write_text("")
    (unit / "sub/test_sub.py").write_text("")
    assert untested(package, unit, {"sub/c.py"}) == []
    assert stale_excuses(package, unit, {"consts.py": "x"}, {"a.py": "y", "sub/c.py": "z"}) == [
        "consts.py: no such module with logic", "a.py: has test_a.py now; take it off OWED"]
