"""Marks every bad-input test of the suite `bad_input`, so the catalogue can be counted.

A bad-input test runs the real CLI on hostile or malformed input and asserts the error contract
(`assert_known_error`: one `error:` and one `hint:` line, the exit code, no traceback) *and* an
unchanged host (`diff_snapshots` of the root before/after; for the Kubernetes commands: no
request reached the API server). Tests are recognised by those two
calls in their own source or in a helper of the same module they call (e.g. a `refused()`
helper), so a new test of that shape is counted without anyone remembering a decorator; tests
may also carry `@pytest.mark.bad_input` explicitly (the fault tests compare snapshots in a
private mount namespace). Count them with `python3 bench/count_bad_input.py`.
"""

from __future__ import annotations

import inspect
import re

import pytest

_CONTRACT = "assert_known_error("
# an unchanged host root, or (for the Kubernetes commands) no request reached the API server
_UNCHANGED = ("diff_snapshots(", "apiserver.count() == 0")
_cache: dict[object, bool] = {}


def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def is_bad_input_test(func) -> bool:
    if func in _cache:
        return _cache[func]
    text = _source(func)
    module = inspect.getmodule(func)
    helpers = {name: h for name, h in (vars(module).items() if module else ())
               if inspect.isfunction(h) and h is not func and h.__module__ == module.__name__}
    seen: set[str] = set()
    grew = True
    while grew:  # helpers of helpers too (e.g. refused() asserting through changes())
        grew = False
        for name, helper in helpers.items():
            if name not in seen and re.search(rf"\b{re.escape(name)}\(", text):
                seen.add(name)
                text += _source(helper)
                grew = True
    _cache[func] = _CONTRACT in text and any(u in text for u in _UNCHANGED)
    return _cache[func]


def pytest_collection_modifyitems(items):
    for item in items:
        func = getattr(item, "function", None)
        if func is not None and not item.get_closest_marker("bad_input") and is_bad_input_test(func):
            item.add_marker(pytest.mark.bad_input)
