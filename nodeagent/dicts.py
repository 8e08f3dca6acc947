"""Reading nested JSON/TOML objects that may lack a level: Kubernetes objects, CRI's config.

One walk instead of chains of `.get(key)` each defaulting to an empty dict: a missing, null or non-object
level gives the default, never an AttributeError on someone else's malformed object.
"""

from __future__ import annotations

from typing import Any, Mapping


def dig(obj: Any, *path: str, default: Any = None) -> Any:
    """obj[path[0]][path[1]]...; `default` when a step is missing, null or not an object."""
    node = obj
    for key in path:
        if not isinstance(node, Mapping):
            return default
        node = node.get(key)
        if node is None:
            return default
    return node


def table(obj: Any, *path: str) -> Mapping[str, Any]:
    """The object at `path`, or an empty one when it is missing or not an object."""
    node = dig(obj, *path)
    return node if isinstance(node, Mapping) else {}


def items(obj: Any, *path: str) -> list[Any]:
    """The list at `path` (e.g. a List's `items`), or an empty one."""
    node = dig(obj, *path)
    return node if isinstance(node, list) else []
