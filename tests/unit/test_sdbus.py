"""sdbus: the D-Bus subset nodeagent speaks to systemd's private socket.

Messages written by a REAL D-Bus implementation (libdbus, through `dbus-send --peer`, which
talks peer to peer like systemd's private socket) are captured by a stand-in peer here (a
stand-in: it only records what it is sent) and read back with sdbus's decoder; sdbus's own
calls are read back too. Calls against a real systemd: tests/integration/test_service.py.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading

import pytest

from nodeagent.sdbus import METHOD_CALL, DbusError, SystemdBus, decode_message, encode_call

PATH, INTERFACE, MEMBER, DESTINATION, SIGNATURE = 1, 2, 3, 6, 8  # header field codes (D-Bus spec)


class Peer:
    """Accepts one connection, answers EXTERNAL auth with OK, and records the bytes after BEGIN."""

    def __init__(self, path: str, answer: bytes = b"OK 0123456789abcdef0123456789abcdef\r\n"):
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.listener.settimeout(20)
        self.answer = answer
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"BEGIN\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                    if b"AUTH" in data and data.endswith(b"\r\n") and b"OK" not in data:
                        conn.sendall(self.answer)
                        data += b"OK"  # answered once
                    if b"NEGOTIATE_UNIX_FD" in data and b"AGREE" not in data:
                        conn.sendall(b"ERROR\r\n")
                        data += b"AGREE"
                self.received = data.split(b"BEGIN\r\n", 1)[1]
                while len(self.received) < 16 or not _complete(self.received):
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    self.received += chunk
            except OSError:
                return

    def close(self) -> None:
        self.thread.join(20)
        self.listener.close()


def _complete(data: bytes) -> bool:
    try:
        return len(data) >= decode_message(data)[3]
    except Exception:  # noqa: BLE001 - not all of it yet
        return False


@pytest.mark.skipif(not shutil.which("dbus-send"), reason="needs dbus-send (libdbus) to write a real message")
def test_a_call_written_by_libdbus_is_read_field_by_field(tmp_path):
    address = str(tmp_path / "private")
    peer = Peer(address)
    subprocess.run(["dbus-send", f"--peer=unix:path={address}", "--print-reply", "--reply-timeout=2000",
                    "--dest=org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                    "org.freedesktop.systemd1.Manager.SetUnitProperties", "string:containerd.service",
                    "boolean:true", "uint32:7", "array:string:a,bc", "dict:string:int32:x,1,y,-2",
                    "variant:uint64:4294967296"], capture_output=True, timeout=30)
    peer.close()
    msg_type, fields, body, length = decode_message(peer.received)
    assert msg_type == METHOD_CALL and length == len(peer.received)
    assert fields[PATH] == "/org/freedesktop/systemd1" and fields[INTERFACE] == "org.freedesktop.systemd1.Manager"
    assert fields[MEMBER] == "SetUnitProperties" and fields[DESTINATION] == "org.freedesktop.systemd1"
    assert fields[SIGNATURE] == "sbuasa{si}v"
    assert body == ["containerd.service", True, 7, ["a", "bc"], {"x": 1, "y": -2}, 4294967296]


def test_our_calls_read_back_exactly():
    data = encode_call(7, "/org/freedesktop/systemd1/unit/containerd_2eservice", "org.freedesktop.DBus.Properties",
                       "Get", "ss", ("org.freedesktop.systemd1.Service", "MainPID"))
    msg_type, fields, body, length = decode_message(data)
    assert (msg_type, length) == (METHOD_CALL, len(data))
    assert fields[MEMBER] == "Get" and fields[SIGNATURE] == "ss" and fields[DESTINATION] == "org.freedesktop.systemd1"
    assert body == ["org.freedesktop.systemd1.Service", "MainPID"]
    nested = encode_call(1, "/", "i.f", "M", "a(sv)", ([("a", ("u", 1)), ("bb", ("s", "x"))],))
    assert decode_message(nested)[2] == [[("a", 1), ("bb", "x")]]


def test_auth_is_pipelined_and_a_refusal_is_a_known_error(tmp_path):
    address = str(tmp_path / "private")
    peer = Peer(address, answer=b"REJECTED EXTERNAL\r\n")
    with pytest.raises(DbusError, match="refused authentication: REJECTED EXTERNAL") as exc:
        SystemdBus(address, timeout=5)
    assert "uid 0" in exc.value.hint
    peer.listener.close()
    with pytest.raises(DbusError, match="cannot talk to systemd at"):
        SystemdBus(str(tmp_path / "nothing-here"), timeout=5)


def test_big_endian_messages_are_refused():
    with pytest.raises(DbusError, match="big-endian"):
        decode_message(b"B" + bytes(15))
