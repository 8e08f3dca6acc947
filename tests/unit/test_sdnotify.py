"""sdnotify: one datagram to $NOTIFY_SOCKET, received here by a real unix socket standing where
systemd's would; a no-op outside systemd."""

from __future__ import annotations

import os
import socket
import uuid

from nodeagent import sdnotify


def test_ready_reaches_a_path_socket_and_an_abstract_one(tmp_path):
    path = str(tmp_path / "notify")
    abstract = f"nodeagent-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as by_path, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as by_name:
        by_path.bind(path)
        by_name.bind("\0" + abstract)
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": path})
        assert sdnotify.notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + abstract})
        assert by_path.recv(64) == b"READY=1"
        assert by_name.recv(64) == b"WATCHDOG=1"


def test_outside_systemd_or_with_nobody_listening_it_does_nothing(tmp_path):
    assert sdnotify.notify("READY=1", {}) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_watchdog_interval_is_half_of_watchdog_sec_for_this_process_only():
    me = str(os.getpid())
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": me}) == 10.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 10.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "100"}) == 0.5  # never a busy loop
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None  # meant for another
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert sdnotify.watchdog_interval({}) is None
