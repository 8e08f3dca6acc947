"""detect.unit_pid: MainPIDs from systemd's private socket (best effort), and a process's
innermost PID.

A real systemd answering MainPID: tests/integration/test_discovery_trust.py (booted in
namespaces). Here: every way there is no answer, which must be an empty set, quickly and
without an exception, and never a connection to a socket we do not trust."""

import os
import socket

import pytest

from nodeagent.detect import unit_pid
from nodeagent.detect.procs import HostProcess
from nodeagent.host import HostRoot

UNITS = ("containerd.service",)


@pytest.fixture
def private(tmp_path):
    """<root>/run/systemd/private as a real listening socket that never speaks D-Bus."""
    (tmp_path / "run/systemd").mkdir(parents=True)
    path = tmp_path / "run/systemd/private"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    server.setblocking(False)
    yield server
    server.close()


def connections(server):
    """How many clients connected to `server` (accepting and closing each)."""
    count = 0
    while True:
        try:
            client, _ = server.accept()
        except BlockingIOError:
            return count
        client.close()
        count += 1


def test_no_socket_is_no_answer(tmp_path):
    assert unit_pid.main_pids(HostRoot(tmp_path), UNITS) == set()


def test_a_regular_file_is_no_socket(tmp_path):
    (tmp_path / "run/systemd").mkdir(parents=True)
    (tmp_path / "run/systemd/private").write_text("")
    assert unit_pid.main_pids(HostRoot(tmp_path), UNITS) == set()


def test_no_units_asks_nothing(tmp_path, private):
    assert unit_pid.main_pids(HostRoot(tmp_path), ()) == set()
    assert connections(private) == 0


def test_a_socket_that_never_answers_times_out_to_no_answer(tmp_path, private):
    # the kernel queues the connection; nobody ever replies to the D-Bus handshake
    assert unit_pid.main_pids(HostRoot(tmp_path), UNITS, timeout=0.3) == set()
    assert connections(private) == 1  # it did try: this is the timeout path, not a refusal


def test_a_socket_nobody_listens_on_is_no_answer(tmp_path):
    (tmp_path / "run/systemd").mkdir(parents=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(tmp_path / "run/systemd/private"))  # bound, not listening: ECONNREFUSED
    try:
        assert unit_pid.main_pids(HostRoot(tmp_path), UNITS) == set()
    finally:
        dead.close()


def test_a_socket_under_a_world_writable_directory_is_never_used(tmp_path, private):
    # anyone could have put that socket there: it must not be asked at all
    (tmp_path / "run/systemd").chmod(0o777)
    assert unit_pid.main_pids(HostRoot(tmp_path), UNITS, timeout=0.3) == set()
    assert connections(private) == 0


def proc_with_status(tmp_path, status, pid=4242):
    proc_dir = tmp_path / "proc" / str(pid)
    proc_dir.mkdir(parents=True)
    if status is not None:
        (proc_dir / "status").write_text(status)
    return HostProcess(pid, "containerd", None, proc_dir=str(proc_dir))


@pytest.mark.parametrize("status, expected", [
    ("Name:\tcontainerd\nNSpid:\t4242\t17\t1\n", 1),  # three nested namespaces: the innermost is last
    ("Name:\tcontainerd\nNSpid:\t4242\n", 4242),
    ("Name:\tcontainerd\nPid:\t4242\n", 4242),  # kernels before 4.1 have no NSpid: the pid we know
    ("NSpid:\tgarbage\n", None),
    ("NSpid:\n", None),
    (None, None),  # the process is gone
])
def test_innermost_pid(tmp_path, status, expected):
    assert unit_pid.innermost_pid(proc_with_status(tmp_path, status)) == expected


def test_innermost_pid_of_this_process():
    me = HostProcess(os.getpid(), "python3", None, proc_dir=f"/proc/{os.getpid()}")
    with open("/proc/self/status") as fh:
        nspid = next(line for line in fh if line.startswith("NSpid:")).split()
    assert unit_pid.innermost_pid(me) == int(nspid[-1])
