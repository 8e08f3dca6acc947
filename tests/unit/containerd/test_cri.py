"""containerd.cri: how a CRI status is read and judged, how gRPC failures become named errors,
who is believed to serve the socket, and the CRI log format.

Real containerd daemons are tests/integration/test_cri.py's job. Here a STAND-IN gRPC server on a
unix socket in tmp_path answers with hand-built bytes the way containerd's version, introspection
and CRI services do, so the parsing and error mapping can be driven through cases a real daemon
will not produce on demand (a non-CRI plugin failing, a broken info JSON, each gRPC status code).
"""

from __future__ import annotations

import json
import os
import shutil
import socket as socket_mod
import subprocess
import sys
import tempfile
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2 as pb

from nodeagent.containerd import cri
from nodeagent.host import HostRoot


# -- protobuf wire format, written by hand so the decoder is checked against an independent encoder --

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, value: bytes | int | str, wire: int = 2) -> bytes:
    if wire == 0:
        return varint(number << 3) + varint(value)
    if wire in (1, 5):
        return varint(number << 3 | wire) + value
    raw = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(raw)) + raw


def plugin(ptype: str, pid: str, error: str | None = None) -> bytes:
    body = field(1, ptype) + field(2, pid) + field(5, b"\x00" * 8, wire=1) + field(6, 3, wire=0)
    if error is not None:
        body += field(7, field(1, 2, wire=0) + (field(2, error) if error else b""))
    return field(1, body)


class StandIn:
    """A gRPC server on a unix socket: service/method -> handler(request bytes, context) -> bytes."""

    def __init__(self, path, methods: dict[str, dict]):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        for service, handlers in methods.items():
            self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, {
                name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in handlers.items()})])
        self.server.add_insecure_port(f"unix:{path}")
        self.server.start()

    def stop(self):
        self.server.stop(None)


def version_service(text: str = "v9.9.9") -> dict:
    return {"containerd.services.version.v1.Version": {"Version": lambda req, ctx: field(1, text) + field(2, "rev")}}


def failing(code, details):
    def handler(req, ctx):
        ctx.abort(code, details)
    return handler


@pytest.fixture
def stand_in(tmp_path):
    servers = []

    def make(methods: dict) -> str:
        path = str(tmp_path / f"s{len(servers)}.sock")
        servers.append(StandIn(path, methods))
        return path

    yield make
    for server in servers:
        server.stop()


def test_status_names_only_the_cri_plugins_load_errors_when_cri_is_unimplemented(stand_in):
    plugins = (plugin("io.containerd.grpc.v1", "cri", "invalid plugin config: default_runtime_name = \"runc\"")
               + plugin("io.containerd.snapshotter.v1", "zfs", "path must be a zfs filesystem")
               + plugin("io.containerd.cri.v1", "runtime", "")
               + plugin("io.containerd.runtime.v2", "task")
               + field(2, "not a plugin"))
    socket = stand_in({**version_service("1.7.24"), "containerd.services.introspection.v1.Introspection": {
        "Plugins": lambda req, ctx: plugins}})
    status = cri.cri_status(socket, timeout=2)
    assert status.answers and not status.plugin_ok and not status.ok
    assert status.runtime_version == "1.7.24"
    assert status.reason == ("containerd answers but its CRI plugin is not loaded (CRI calls return UNIMPLEMENTED): "
                             "io.containerd.cri.v1.runtime: failed; "
                             'io.containerd.grpc.v1.cri: invalid plugin config: default_runtime_name = "runc"')


def test_unreadable_introspection_still_reports_the_missing_cri_plugin(stand_in):
    socket = stand_in({**version_service(), "containerd.services.introspection.v1.Introspection": {
        "Plugins": lambda req, ctx: field(1, b"\x0f")}})  # wire type 7: not protobuf
    status = cri.cri_status(socket, timeout=2)
    assert status.reason == "containerd answers but its CRI plugin is not loaded (CRI calls return UNIMPLEMENTED)"


def test_a_failing_cri_status_call_is_a_reason_not_an_exception(stand_in):
    socket = stand_in({**version_service(), "runtime.v1.RuntimeService": {
        "Status": failing(grpc.StatusCode.INTERNAL, "boom")}})
    status = cri.cri_status(socket, timeout=2)
    assert status.answers and not status.plugin_ok and status.reason == "CRI Status failed: boom"


def cri_status_response(ready: bool | None, info_config: str, handlers: list[str]) -> bytes:
    conditions = [pb.RuntimeCondition(type="NetworkReady", status=False, reason="NoCNI")]
    if ready is not None:
        conditions.append(pb.RuntimeCondition(type="RuntimeReady", status=ready, reason="ShimGone", message="no shim"))
    return pb.StatusResponse(status=pb.RuntimeStatus(conditions=conditions), info={"config": info_config},
                             runtime_handlers=[pb.RuntimeHandler(name=n) for n in handlers]).SerializeToString()


def test_ready_status_merges_configured_and_listed_handlers_without_needing_network(stand_in):
    config = {"containerd": {"runtimes": {"runc": {"runtimeType": "io.containerd.runc.v2"}, "odd": {}}}}
    socket = stand_in({**version_service(), "runtime.v1.RuntimeService": {
        "Status": lambda req, ctx: cri_status_response(True, json.dumps(config), ["", "runsc"])}})
    status = cri.cri_status(socket, timeout=2)
    assert status.ok and status.reason is None
    assert status.handlers == {"runc", "odd", "runsc"}, "the default handler's empty name is not a handler"
    assert status.runtime_types() == {"runc": "io.containerd.runc.v2", "odd": ""}
    assert status.as_dict()["handlers"] == ["odd", "runc", "runsc"]


@pytest.mark.parametrize(("ready", "reason"), [
    (False, "CRI runtime not ready: ShimGone no shim"), (None, "CRI runtime not ready")])
def test_a_runtime_that_is_not_ready_says_why_and_bad_info_json_is_tolerated(stand_in, ready, reason):
    socket = stand_in({**version_service(), "runtime.v1.RuntimeService": {
        "Status": lambda req, ctx: cri_status_response(ready, "{not json", [])}})
    status = cri.cri_status(socket, timeout=2)
    assert status.plugin_ok and not status.ready and not status.ok
    assert status.reason == reason and status.config == {} and status.handlers == set()


@pytest.mark.parametrize(("code", "details", "error"), [
    (grpc.StatusCode.UNAVAILABLE, "gone", cri.CriUnavailable),
    (grpc.StatusCode.UNIMPLEMENTED, "unknown service", cri.CriPluginNotOk),
    (grpc.StatusCode.UNKNOWN, 'failed to get sandbox runtime: no runtime for "kata" is configured',
     cri.HandlerNotConfigured),
    (grpc.StatusCode.INTERNAL, "disk full", cri.CriError),
])
def test_grpc_failures_become_errors_with_their_own_hint(stand_in, code, details, error):
    socket = stand_in({"runtime.v1.RuntimeService": {"RunPodSandbox": failing(code, details)}})
    with cri.CriClient(socket, timeout=2) as client, pytest.raises(cri.CriError) as err:
        client.run_pod("kata", log_directory="/nonexistent")
    assert type(err.value) is error
    assert details in err.value.message and "'kata'" in err.value.message
    assert err.value.hint == error.default_hint


def test_destroying_a_pod_that_is_already_gone_is_fine_but_other_failures_are_not(stand_in):
    calls = []

    def gone(req, ctx):
        calls.append(pb.StopPodSandboxRequest.FromString(req).pod_sandbox_id)
        ctx.abort(grpc.StatusCode.NOT_FOUND, "an error occurred: pod sandbox p1 not found")

    socket = stand_in({"runtime.v1.RuntimeService": {
        "StopPodSandbox": gone, "RemovePodSandbox": failing(grpc.StatusCode.INTERNAL, "device busy")}})
    with cri.CriClient(socket, timeout=2) as client, pytest.raises(cri.CriError, match="device busy"):
        client.destroy_pod("p1")
    assert calls == ["p1"]


def serve_as(uid: int, path) -> subprocess.Popen:
    """A real process of another user listening on a unix socket (prints 'ready' once bound)."""
    code = (f"import os, socket\nos.setgid({uid}); os.setuid({uid})\n"
            f"s = socket.socket(socket.AF_UNIX); s.bind({str(path)!r}); s.listen(4)\nprint('ready', flush=True)\n"
            "while True:\n    c, _ = s.accept(); c.close()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the socket server as another user")
def test_a_socket_served_by_a_non_root_user_is_not_believed():
    # pytest's tmp_path sits under a 0700 directory the other user cannot reach
    work = Path(tempfile.mkdtemp(prefix="nodeagent-peer-"))
    os.chmod(work, 0o777)
    path = work / "c.sock"
    proc = serve_as(65534, path)
    try:
        assert cri.peer_credentials(str(path)) == (proc.pid, 65534)
        assert cri.peer_pid(str(path)) is None
        assert cri.untrusted_peer(str(path)) == f"the process serving {path} (pid {proc.pid}) runs as uid 65534, not root"
        status = cri.cri_status(path, timeout=1)
        assert not status.answers and status.reason.startswith("not trusted: ")
        with cri.CriClient(path, timeout=1) as client, pytest.raises(cri.CriError, match="not trusted"):
            client.list_pods()
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work)


@pytest.mark.skipif(os.geteuid() != 0, reason="a root server is what is believed")
def test_peer_of_a_root_server_and_of_nothing(tmp_path):
    path = tmp_path / "r.sock"
    server = socket_mod.socket(socket_mod.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    try:
        assert cri.peer_credentials(str(path)) == (os.getpid(), 0)
        assert cri.peer_pid(str(path)) == os.getpid()
        assert cri.untrusted_peer(str(path)) is None
    finally:
        server.close()
    assert cri.peer_credentials(str(tmp_path / "none.sock")) is None
    assert cri.untrusted_peer(str(tmp_path / "none.sock")) is None, "no peer: discovery's file-owner check decides"


def test_a_missing_socket_is_a_status_without_speaking_grpc(tmp_path):
    status = cri.cri_status(tmp_path / "absent.sock")
    assert not status.answers and status.reason == f"no socket at {tmp_path / 'absent.sock'}"
    with cri.CriClient(tmp_path / "absent.sock") as client:
        assert client.status().reason == status.reason


@pytest.mark.parametrize(("text", "payload"), [
    ("t stdout F one\nt stderr F two\n", "one\ntwo\n"),
    ("t stdout P ab\nt stdout P cd\nt stdout F ef\n", "abcdef\n"),
    ("t stdout P tail without end", "tail without end\n"),
    ("t stdout F\nt stdout F  spaced  \n", "\n spaced  \n"),
    ("garbage\n\nt stdout\nt stdout F x\n", "x\n"),
    ("", ""),
])
def test_cri_log_payloads(text, payload):
    assert cri.read_cri_log(text) == payload


def test_the_socket_is_joined_with_the_root_and_the_flag_wins(tmp_path):
    host = HostRoot(tmp_path)
    assert cri.socket_for(host, None) == str(tmp_path / "run/containerd/containerd.sock")
    assert cri.socket_for(host, None, "/run/k3s/containerd/containerd.sock") == str(
        tmp_path / "run/k3s/containerd/containerd.sock")
    assert cri.socket_for(host, "/x.sock", "/run/k3s/containerd/containerd.sock") == str(tmp_path / "x.sock")


def test_ok_needs_answers_plugin_and_ready():
    full = dict(answers=True, plugin_ok=True, ready=True)
    assert cri.CriStatus(socket="/s", **full).ok
    for flag in full:
        assert not cri.CriStatus(socket="/s", **{**full, flag: False}).ok
