"""Make sockets inside another network namespace (a systemd node's) from the test process.

Why: the node of tests/support/systemd_node.py has a network namespace of its own (only `lo`),
and a pod on it with the node's network (`ctr run --net-host`) can reach nothing of ours on the
machine's 127.0.0.1. A socket belongs to the namespace it was created in, for life, so a thread
that switches its own network namespace (setns(2) on a thread affects that thread only) can
create a listening socket there and hand it back: the stand-in API server then serves the node's
loopback while running in this process, and the test can poll the pod's health port the same way.
"""

from __future__ import annotations

import ctypes
import os
import threading
import urllib.error
import urllib.request
from typing import Callable, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


def in_netns(netns: str | os.PathLike, fn: Callable[[], T]) -> T:
    """fn() run in a fresh thread inside the network namespace at `netns` (e.g. /proc/PID/ns/net)."""
    result: dict[str, object] = {}

    def target() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller
            result["error"] = exc

    # the thread ends right after: no later work of this process runs in the other namespace
    thread = threading.Thread(target=target, name="in-netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]


def http_get(netns: str | os.PathLike, url: str, timeout: float = 5) -> tuple[int, str]:
    """(status, body) of a GET made from inside `netns`; (0, "") when nothing answers."""

    def get() -> tuple[int, str]:
        try:
            # no proxy: the environment's would be asked for the node's loopback
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(url, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    return in_netns(netns, get)
