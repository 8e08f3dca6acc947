"""The package's layering, read from the source with `ast` (issue 12, scope 1).

Two rules a reader of observe -> plan -> apply relies on:
- only the CLI layer (`nodeagent/commands/`, `nodeagent/cli.py`) imports `nodeagent.commands`;
  everything below it must work without the CLI;
- no module reaches into another nodeagent module's `_private` names: what a caller needs is
  that module's public verb.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "nodeagent"
CLI_LAYER = ("commands/", "cli.py")


def _sources() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        out.append((rel, ast.parse(path.read_text(), filename=str(path))))
    return out


def _module_of(rel: str) -> str:
    parts = ["nodeagent", *rel[: -len(".py")].split("/")]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(rel: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative imports resolved against `rel`)."""
    if not node.level:
        return node.module or ""
    package = _module_of(rel).split(".")
    if not rel.endswith("__init__.py"):
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_nodeagent_module(dotted: str) -> bool:
    if not dotted.startswith("nodeagent"):
        return False
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imported(rel: str, tree: ast.Module) -> list[tuple[int, str, str | None]]:
    """(line, module imported, local name bound to that module or None) for every import."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or (alias.name if "." not in alias.name else None)
                out.append((node.lineno, alias.name, local))
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(rel, node)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if _is_nodeagent_module(full):  # `from nodeagent.x import module`
                    out.append((node.lineno, full, alias.asname or alias.name))
                else:  # `from nodeagent.x import name`: the module imported is nodeagent.x
                    out.append((node.lineno, base, None))
    return out


def commands_imports_below_cli(sources: list[tuple[str, ast.Module]] | None = None) -> list[str]:
    bad = []
    for rel, tree in _sources() if sources is None else sources:
        if rel.startswith(CLI_LAYER):
            continue
        for line, module, _ in _imported(rel, tree):
            if module == "nodeagent.commands" or module.startswith("nodeagent.commands."):
                bad.append(f"nodeagent/{rel}:{line} imports {module}")
    return sorted(set(bad))


def private_reaches(sources: list[tuple[str, ast.Module]] | None = None) -> list[str]:
    bad = []
    for rel, tree in _sources() if sources is None else sources:
        own = _module_of(rel)
        modules = {local: module for _, module, local in _imported(rel, tree)
                   if local and _is_nodeagent_module(module) and module != own}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and _absolute(rel, node).startswith("nodeagent"):
                bad += [f"nodeagent/{rel}:{node.lineno} imports {_absolute(rel, node)}.{a.name}"
                        for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
                continue
            name = node.attr
            if node.value.id in modules and name.startswith("_") and not name.startswith("__"):
                bad.append(f"nodeagent/{rel}:{node.lineno} uses {modules[node.value.id]}.{name}")
    return bad


def test_nothing_below_the_cli_imports_commands():
    assert commands_imports_below_cli() == []


def test_no_module_reaches_into_another_modules_private_names():
    assert private_reaches() == []


def test_the_checks_find_what_they_look_for():
    """Guards both rules against an ast walk that silently finds nothing (the old code's cases)."""
    source = ("from nodeagent.containerd import edit\nfrom nodeagent import settings as s\n"
              "from nodeagent.settings import _FIELDS\nedit._cut_block\ns._FIELDS\nedit.parse\n"
              "def f():\n    from ..commands.install import build_plan\n")
    sources = [("containerd/apply.py", ast.parse(source)), ("commands/converge.py", ast.parse(source))]
    assert private_reaches(sources[:1]) == [
        "nodeagent/containerd/apply.py:3 imports nodeagent.settings._FIELDS",
        "nodeagent/containerd/apply.py:4 uses nodeagent.containerd.edit._cut_block",
        "nodeagent/containerd/apply.py:5 uses nodeagent.settings._FIELDS",
    ]
    assert commands_imports_below_cli(sources) == ["nodeagent/containerd/apply.py:8 imports nodeagent.commands.install"]


# --- runtimes are plug-ins (issue 12, scope 2) ------------------------------------------------
RUNTIME_NAMES = ("gvisor", "kata")  # spelled out: the rule must not depend on the code it checks
PLUGIN_PACKAGE = "runtimes/"


def _names_a_runtime(node: ast.AST) -> bool:
    """A runtime-name string, or a tuple/list/set literal holding one."""
    if isinstance(node, ast.Constant):
        return node.value in RUNTIME_NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_runtime(e) for e in node.elts)
    return False


def runtime_name_branches(sources: list[tuple[str, ast.Module]] | None = None) -> list[str]:
    """Code outside nodeagent/runtimes/ that decides by a runtime's name: `== "gvisor"`,
    `"kata" in x`, `x in ("gvisor", "all")`, a `case "kata":`, or a literal list of runtime names
    (`("gvisor", "kata")`, `{"gvisor": ...}`) a new runtime would have to be added to."""
    bad = []
    for rel, tree in _sources() if sources is None else sources:
        if rel.startswith(PLUGIN_PACKAGE):
            continue
        compared = {id(n) for c in ast.walk(tree) if isinstance(c, ast.Compare) for n in (c.left, *c.comparators)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(_names_a_runtime(n) for n in (node.left, *node.comparators)):
                bad.append(f"nodeagent/{rel}:{node.lineno} compares with a runtime name")
            elif isinstance(node, ast.MatchValue) and _names_a_runtime(node.value):
                bad.append(f"nodeagent/{rel}:{node.lineno} matches a runtime name")
            elif isinstance(node, (ast.Tuple, ast.List, ast.Set)) and id(node) not in compared and _names_a_runtime(node):
                bad.append(f"nodeagent/{rel}:{node.lineno} lists runtime names")
            elif isinstance(node, ast.Dict) and any(k is not None and _names_a_runtime(k) for k in node.keys):
                bad.append(f"nodeagent/{rel}:{node.lineno} keys a dict by runtime name")
    return sorted(set(bad))


def test_no_branch_on_a_runtime_name_outside_the_plugins():
    """Callers iterate `runtimes.ALL` or ask `runtimes.get(name)`; a third runtime is one new module."""
    assert runtime_name_branches() == []


def test_the_runtime_name_check_finds_what_it_looks_for():
    source = ('if runtime == "gvisor":\n    pass\nif "kata" in runtimes:\n    pass\n'
              'ok = wanted in ("gvisor", "all")\nNAMES = ("gvisor", "kata")\nv = {"gvisor": 1}\n'
              'match r:\n    case "kata":\n        pass\n'
              'fine = facts["gvisor"]\nalso_fine = f"{prefix}gvisor"\n')
    sources = [("artifacts/api.py", ast.parse(source)), ("runtimes/gvisor.py", ast.parse(source))]
    assert runtime_name_branches(sources) == [
        "nodeagent/artifacts/api.py:1 compares with a runtime name",
        "nodeagent/artifacts/api.py:3 compares with a runtime name",
        "nodeagent/artifacts/api.py:5 compares with a runtime name",
        "nodeagent/artifacts/api.py:6 lists runtime names",
        "nodeagent/artifacts/api.py:7 keys a dict by runtime name",
        "nodeagent/artifacts/api.py:9 matches a runtime name",
    ]
# --- no function over 80 lines (issue 12 acceptance; the project's style rule) ----------------

MAX_FUNCTION_LINES = 80


def long_functions(sources: list[tuple[str, ast.Module]] | None = None, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions and methods (nested ones too) longer than `limit` lines, from `def` to the last line."""
    bad = []
    for rel, tree in _sources() if sources is None else sources:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    bad.append(f"nodeagent/{rel}:{node.lineno} {node.name} is {length} lines")
    return bad


def test_no_function_is_longer_than_80_lines():
    assert long_functions() == []


def test_the_length_check_counts_every_line_of_a_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(79))
    fits = ast.parse(f"def f():\n{body}\n")  # 80 lines: allowed
    method = ast.parse(f"class C:\n    def g(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n        return 1\n")
    assert long_functions([("m.py", fits)]) == []
    assert long_functions([("m.py", method)]) == ["nodeagent/m.py:2 g is 81 lines"]
# `(x.get("a") or {}).get("b")`: a fact or an object's field read through a chain of defaults
DICT_CHAIN = re.compile(r"\.get\([^)]*\) or \{\}")
MAX_DICT_CHAINS = 5  # issue 12's acceptance: typed facts and nodeagent.dicts instead


def dict_chains(sources: dict[str, str] | None = None) -> list[str]:
    """`.get(...) or {}` uses in nodeagent/ outside runtimes/ (the plug-ins may read raw tables)."""
    if sources is None:
        sources = {p.relative_to(PACKAGE).as_posix(): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}
    return [f"nodeagent/{rel}:{n}" for rel, text in sources.items() if not rel.startswith("runtimes/")
            for n, line in enumerate(text.splitlines(), 1) for _ in DICT_CHAIN.finditer(line)]


def test_facts_are_read_by_attribute_not_dict_chains():
    found = dict_chains()
    assert len(found) <= MAX_DICT_CHAINS, found


def test_the_dict_chain_count_finds_what_it_looks_for():
    sources = {"kube/x.py": 'a = (n.get("metadata") or {}).get("labels") or {}\nb = n.get("x", {})\n',
               "runtimes/gvisor.py": 'c = t.get("options") or {}\n'}
    assert dict_chains(sources) == ["nodeagent/kube/x.py:1", "nodeagent/kube/x.py:1"]
