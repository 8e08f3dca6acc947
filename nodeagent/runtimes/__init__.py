"""The sandbox runtimes nodeagent knows, one plug-in module each (`runtimes/<name>.py`).

`NAMES` is the registry: each name is a module here exporting `RUNTIME`, a `base.Runtime`.
`ALL` (the objects, in NAMES' order) and `get(name)` import them on first use, so importing this
package stays cheap and free of cycles (the plug-ins import artifacts/, containerd/ and detect/,
which import this package). No code outside this package branches on a runtime's name: it
iterates `ALL` or asks `get(name)`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nodeagent.runtimes.base import Runtime

NAMES: tuple[str, ...] = ("gvisor", "kata")


def get(name: str) -> "Runtime":
    """The plug-in for `name` (KeyError for a name that is not in NAMES)."""
    if name not in NAMES:
        raise KeyError(name)
    return importlib.import_module(f"nodeagent.runtimes.{name}").RUNTIME


def __getattr__(attr: str):
    """`runtimes.ALL`: every plug-in object, in NAMES' order (imported on first use, PEP 562)."""
    if attr == "ALL":
        return get_all()
    raise AttributeError(attr)


def selected(setting: str) -> list[str]:
    """The runtimes `--runtime` names: every one for "all", else the one named."""
    return list(NAMES) if setting == "all" else [setting]


def owner_of_role(role: str) -> str | None:
    """The runtime whose option file is recorded under this undo role (e.g. runsc.toml), if any."""
    return next((rt.name for rt in get_all() if role in rt.config_roles), None)


def option_roles() -> frozenset[str]:
    """Undo roles of every runtime's option files (files a containerd config names by path)."""
    return frozenset(role for rt in get_all() for role in rt.config_roles)


def get_all() -> tuple["Runtime", ...]:
    """`ALL` as a function."""
    return tuple(get(n) for n in NAMES)
