"""A minimal D-Bus client for systemd's private socket (peer to peer, no bus daemon).

Why our own: from a DaemonSet, the node's systemd is reachable through `<root>/run/systemd/private`
(the host's /run mounted in), which needs neither hostPID nor a privileged container. `systemctl`
cannot use it (in a container it refuses: "System has not been booted with systemd"), and
`busctl --address` insists on a bus `Hello` that the private socket does not answer. The protocol
subset needed here is small: EXTERNAL auth, method calls with string arguments, replies holding
basic types and variants.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

from nodeagent.errors import NodeagentError

METHOD_CALL, METHOD_RETURN, ERROR, SIGNAL = 1, 2, 3, 4
_FIELD_PATH, _FIELD_INTERFACE, _FIELD_MEMBER, _FIELD_ERROR_NAME = 1, 2, 3, 4
_FIELD_REPLY_SERIAL, _FIELD_DESTINATION, _FIELD_SIGNATURE = 5, 6, 8

_ALIGN = {"y": 1, "b": 4, "n": 2, "q": 2, "i": 4, "u": 4, "x": 8, "t": 8, "d": 8, "s": 4, "o": 4, "g": 1,
          "v": 1, "a": 4, "(": 8, "{": 8, "h": 4}
_FIXED = {"y": "B", "b": "I", "n": "h", "q": "H", "i": "i", "u": "I", "x": "q", "t": "Q", "d": "d", "h": "I"}


class DbusError(NodeagentError):
    """systemd answered with a D-Bus error (name kept in `name`), or the socket failed."""

    default_hint = "check that systemd runs on the node and that nodeagent can reach /run/systemd/private as root"

    def __init__(self, message: str, hint: str | None = None, name: str = ""):
        super().__init__(message, hint)
        self.name = name


# --- marshalling (little endian) ---------------------------------------------------------------


class _Writer:
    def __init__(self, start: int = 0):
        self.buf = bytearray()
        self.start = start  # offset of buf[0] in the message, for alignment

    def pad(self, n: int) -> None:
        while (self.start + len(self.buf)) % n:
            self.buf.append(0)

    def write(self, sig: str, value: Any) -> None:
        code = sig[0]
        self.pad(_ALIGN[code])
        if code in _FIXED:
            self.buf += struct.pack("<" + _FIXED[code], int(value))
        elif code in "so":
            data = value.encode()
            self.buf += struct.pack("<I", len(data)) + data + b"\0"
        elif code == "g":
            data = value.encode()
            self.buf += bytes([len(data)]) + data + b"\0"
        elif code == "v":
            inner_sig, inner = value
            self.write("g", inner_sig)
            self.write(inner_sig, inner)
        elif code in "({":
            for part_sig, part in zip(_split(sig[1:-1]), value):
                self.write(part_sig, part)
        elif code == "a":
            self.buf += b"\0\0\0\0"
            length_at = len(self.buf) - 4
            elem = sig[1:]
            self.pad(_ALIGN[elem[0]])
            first = len(self.buf)
            for item in value:
                self.write(elem, item)
            struct.pack_into("<I", self.buf, length_at, len(self.buf) - first)
        else:
            raise ValueError(f"cannot marshal D-Bus type {sig!r}")


def _split(sig: str) -> list[str]:
    """Split a signature into complete types: 'sa{sv}(us)' -> ['s', 'a{sv}', '(us)']."""
    out, i = [], 0
    while i < len(sig):
        j = _type_end(sig, i)
        out.append(sig[i:j])
        i = j
    return out


def _type_end(sig: str, i: int) -> int:
    if sig[i] == "a":
        return _type_end(sig, i + 1)
    if sig[i] in "({":
        close = ")" if sig[i] == "(" else "}"
        depth, j = 0, i
        while True:
            if sig[j] in "({":
                depth += 1
            elif sig[j] in ")}":
                depth -= 1
                if depth == 0 and sig[j] == close:
                    return j + 1
            j += 1
    return i + 1


class _Reader:
    def __init__(self, buf: bytes, pos: int = 0):
        self.buf, self.pos = buf, pos

    def align(self, n: int) -> None:
        self.pos += (-self.pos) % n

    def read(self, sig: str) -> Any:
        code = sig[0]
        self.align(_ALIGN[code])
        if code in _FIXED:
            fmt = "<" + _FIXED[code]
            (value,) = struct.unpack_from(fmt, self.buf, self.pos)
            self.pos += struct.calcsize(fmt)
            return bool(value) if code == "b" else value
        if code in "so":
            (n,) = struct.unpack_from("<I", self.buf, self.pos)
            value = self.buf[self.pos + 4:self.pos + 4 + n].decode(errors="replace")
            self.pos += 4 + n + 1
            return value
        if code == "g":
            n = self.buf[self.pos]
            value = self.buf[self.pos + 1:self.pos + 1 + n].decode()
            self.pos += 1 + n + 1
            return value
        if code == "v":
            inner = self.read("g")
            return self.read(inner)
        if code in "({":
            return tuple(self.read(part) for part in _split(sig[1:-1]))
        if code == "a":
            (n,) = struct.unpack_from("<I", self.buf, self.pos)
            self.pos += 4
            elem = sig[1:]
            self.align(_ALIGN[elem[0]])
            end, items = self.pos + n, []
            while self.pos < end:
                items.append(self.read(elem))
            return dict(items) if elem.startswith("{") else items
        raise ValueError(f"cannot read D-Bus type {sig!r}")


def encode_call(serial: int, path: str, interface: str, member: str, signature: str = "", args: tuple = (),
                destination: str = "org.freedesktop.systemd1") -> bytes:
    body = _Writer()
    for part_sig, arg in zip(_split(signature), args):
        body.write(part_sig, arg)
    fields = [
        (_FIELD_PATH, ("o", path)),
        (_FIELD_INTERFACE, ("s", interface)),
        (_FIELD_MEMBER, ("s", member)),
        (_FIELD_DESTINATION, ("s", destination)),
    ]
    if signature:
        fields.append((_FIELD_SIGNATURE, ("g", signature)))
    header = _Writer()
    header.buf += struct.pack("<cBBBII", b"l", METHOD_CALL, 0, 1, len(body.buf), serial)
    header.write("a(yv)", fields)
    header.pad(8)
    return bytes(header.buf + body.buf)


def decode_message(data: bytes) -> tuple[int, dict[int, Any], Any, int]:
    """(type, header fields, body values as a list, total length) of the message at the start of data."""
    if data[:1] != b"l":
        raise DbusError("big-endian D-Bus messages are not supported")
    msg_type, _flags, _version, body_len, _serial = struct.unpack_from("<BBBII", data, 1)
    reader = _Reader(data, 12)
    fields = dict(reader.read("a(yv)"))
    reader.align(8)
    header_end = reader.pos
    sig = fields.get(_FIELD_SIGNATURE, "")
    body_reader = _Reader(data[header_end:header_end + body_len])
    body = [body_reader.read(part) for part in _split(sig)]
    return msg_type, fields, body, header_end + body_len


def _message_length(data: bytes) -> int | None:
    if len(data) < 16:
        return None
    body_len, fields_len = struct.unpack_from("<I", data, 4)[0], struct.unpack_from("<I", data, 12)[0]
    header = 16 + fields_len
    header += (-header) % 8
    return header + body_len


# --- the connection ------------------------------------------------------------------------------


class SystemdBus:
    """A peer-to-peer connection to systemd's private socket. Use as a context manager."""

    def __init__(self, path: str | os.PathLike, timeout: float = 10.0):
        self.path = str(path)
        self.serial = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(self.path)
            self._auth()
        except OSError as exc:
            self.sock.close()
            raise DbusError(f"cannot talk to systemd at {self.path}: {exc.strerror or exc}") from None

    def __enter__(self) -> "SystemdBus":
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def _auth(self) -> None:
        uid_hex = str(os.geteuid()).encode().hex()
        # BEGIN is pipelined with AUTH, as sd-bus clients do: sent after the OK, it can reach systemd
        # in the same read as our first call, which then sits unprocessed in its buffer (seen here:
        # calls hung until their timeout now and then).
        self.sock.sendall(b"\0AUTH EXTERNAL " + uid_hex.encode() + b"\r\nBEGIN\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = self.sock.recv(256)
            if not chunk:
                break
            reply += chunk
        if not reply.startswith(b"OK"):
            raise DbusError(
                f"systemd at {self.path} refused authentication: {reply.decode(errors='replace').strip() or 'closed'}",
                "systemd's private socket accepts root only: run nodeagent as root (uid 0)",
            )

    def call(self, path: str, interface: str, member: str, signature: str = "", *args: Any) -> list[Any]:
        """Call a method and return its reply body; D-Bus errors raise DbusError with the error name."""
        self.serial += 1
        serial = self.serial
        self.sock.sendall(encode_call(serial, path, interface, member, signature, args))
        buf = b""
        while True:
            total = _message_length(buf)
            while total is None or len(buf) < total:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise DbusError(f"systemd closed the connection during {member}")
                buf += chunk
                total = _message_length(buf)
            msg_type, fields, body, used = decode_message(buf)
            buf = buf[used:]
            if fields.get(_FIELD_REPLY_SERIAL) != serial:
                continue  # a signal or someone else's reply
            if msg_type == ERROR:
                name = fields.get(_FIELD_ERROR_NAME, "")
                text = body[0] if body and isinstance(body[0], str) else name
                raise DbusError(f"systemd: {member} failed: {text}", name=name)
            return body

    # systemd helpers ----------------------------------------------------------------------------

    def manager(self, member: str, signature: str = "", *args: Any) -> list[Any]:
        return self.call("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", member, signature, *args)

    def unit_path(self, unit: str) -> str:
        return self.manager("LoadUnit", "s", unit)[0]

    def get(self, object_path: str, interface: str, prop: str) -> Any:
        return self.call(object_path, "org.freedesktop.DBus.Properties", "Get", "ss", interface, prop)[0]
