"""Talk to containerd the way the kubelet does: CRI runtime.v1 over the unix socket.

Health is judged here, not by "the socket answers": on containerd 1.x a drop-in that redefines
the CRI plugin section replaces it (containerd#5837); the daemon still starts, but the CRI plugin
fails to load and every CRI call returns UNIMPLEMENTED. `cri_status` tells these apart and names
the plugin's own load error (read through containerd's introspection service).

grpc and the generated stubs are imported lazily: `nodeagent version` must stay cheap.
"""

from __future__ import annotations

import json
import os
import socket as socket_mod
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeagent.dicts import dig, table
from nodeagent.errors import NodeagentError

DEFAULT_SOCKET = "/run/containerd/containerd.sock"
VERIFY_NAMESPACE = "nodeagent-verify"

SANDBOX_READY = "SANDBOX_READY"
SANDBOX_NOTREADY = "SANDBOX_NOTREADY"


class CriError(NodeagentError):
    """A CRI call failed for a reason we can name."""

    default_hint = "check that containerd is running and its CRI plugin is enabled (journalctl -u containerd)"


class CriUnavailable(CriError):
    default_hint = "start containerd (systemctl start containerd) or pass --containerd-socket"


class CriPluginNotOk(CriError):
    default_hint = (
        "containerd runs but its CRI plugin failed to load: look for 'failed to load plugin' in "
        "containerd's log (journalctl -u containerd) and fix the config (or restore its backup)"
    )


class HandlerNotConfigured(CriError):
    default_hint = "register the handler in containerd's config (nodeagent install) and restart containerd"


@dataclass
class Condition:
    type: str
    status: bool
    reason: str = ""
    message: str = ""


@dataclass
class CriStatus:
    """What containerd's CRI plugin says about itself. A failed probe is a status, not an exception."""

    socket: str
    answers: bool = False  # containerd answered on the socket at all
    plugin_ok: bool = False  # the CRI service is served (not UNIMPLEMENTED)
    ready: bool = False  # RuntimeReady (NetworkReady is not required: CNI may come later)
    conditions: list[Condition] = field(default_factory=list)
    handlers: set[str] = field(default_factory=set)
    config: dict[str, Any] = field(default_factory=dict)
    runtime_version: str | None = None
    reason: str | None = None  # why not ok, in words

    @property
    def ok(self) -> bool:
        return self.answers and self.plugin_ok and self.ready

    def runtime_types(self) -> dict[str, str]:
        """handler -> runtimeType from the effective CRI config."""
        runtimes = table(self.config, "containerd", "runtimes")
        return {name: dig(body, "runtimeType", default="") for name, body in runtimes.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "socket": self.socket,
            "answers": self.answers,
            "plugin_ok": self.plugin_ok,
            "ready": self.ready,
            "handlers": sorted(self.handlers),
            "runtime_version": self.runtime_version,
            "conditions": [c.__dict__ for c in self.conditions],
            "reason": self.reason,
        }


@dataclass
class Pod:
    """A pod sandbox we started, with the config CreateContainer needs again."""

    id: str
    handler: str
    name: str
    log_directory: str
    config: Any  # runtime.v1 PodSandboxConfig


@dataclass
class ContainerRun:
    exit_code: int | None
    output: str  # the container's stdout+stderr from its CRI log
    log_path: str  # as containerd sees it


# --- containerd's own API, just enough to tell "down" from "CRI plugin broken" -----------------


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, Any]]:
    """Decode one protobuf message level into (field number, value) pairs; bytes for LEN fields."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, value))
    return out


def _raw_call(channel, method: str, timeout: float) -> bytes:
    """Call a containerd service method with an empty request; return the raw response bytes."""
    call = channel.unary_unary(method, request_serializer=lambda _: b"", response_deserializer=lambda b: b)
    return call(None, timeout=timeout, metadata=(("containerd-namespace", "k8s.io"),))


def _containerd_version(channel, timeout: float) -> str | None:
    """containerd.services.version.v1 Version: field 1 is the version string."""
    for number, value in _fields(_raw_call(channel, "/containerd.services.version.v1.Version/Version", timeout)):
        if number == 1:
            return value.decode(errors="replace")
    return None


def _cri_plugin_errors(channel, timeout: float) -> dict[str, str]:
    """'type.id' -> init error of CRI plugins that failed to load (introspection Plugins)."""
    errors: dict[str, str] = {}
    raw = _raw_call(channel, "/containerd.services.introspection.v1.Introspection/Plugins", timeout)
    for number, plugin in _fields(raw):
        if number != 1:
            continue
        ptype = pid = ""
        init_err = None
        for pnum, pval in _fields(plugin):
            if pnum == 1:
                ptype = pval.decode(errors="replace")
            elif pnum == 2:
                pid = pval.decode(errors="replace")
            elif pnum == 7:  # google.rpc.Status: code=1, message=2
                init_err = next((v.decode(errors="replace") for n, v in _fields(pval) if n == 2), "") or "failed"
        if init_err is not None and ("cri" in ptype or pid == "cri"):
            errors[f"{ptype}.{pid}"] = init_err
    return errors


# --- CRI ----------------------------------------------------------------------------------------


def _grpc():
    import grpc  # lazy: ~100 ms of imports

    from cri_api.v1 import api_pb2, api_pb2_grpc

    return grpc, api_pb2, api_pb2_grpc


def peer_credentials(socket_path: str) -> tuple[int, int] | None:
    """(pid in our PID namespace, uid) of the process serving a unix socket (SO_PEERCRED); None if unknown."""
    s = socket_mod.socket(socket_mod.AF_UNIX, socket_mod.SOCK_STREAM)
    try:
        s.settimeout(2)
        s.connect(str(socket_path))
        creds = s.getsockopt(socket_mod.SOL_SOCKET, socket_mod.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        return pid, uid
    except OSError:
        return None
    finally:
        s.close()


def peer_pid(socket_path: str) -> int | None:
    """PID of the root process serving a unix socket, in our PID namespace; None if unknown or
    not root (we then never read files through its /proc/<pid>/root)."""
    creds = peer_credentials(socket_path)
    return creds[0] if creds and creds[0] and creds[1] == 0 else None


def untrusted_peer(socket_path: str) -> str | None:
    """Why the process serving `socket_path` is not believed (it is not root), else None.

    Any local user can serve gRPC on a socket of theirs and claim handlers; containerd runs as
    root. The socket file's owner is checked at discovery (detect.trust); this checks who
    actually answers."""
    creds = peer_credentials(socket_path)
    if creds is not None and creds[1] != 0:
        return f"the process serving {socket_path} (pid {creds[0] or 'unknown'}) runs as uid {creds[1]}, not root"
    return None


class CriClient:
    """A CRI runtime.v1 client on one containerd socket. Use as a context manager."""

    def __init__(self, socket: str | os.PathLike = DEFAULT_SOCKET, timeout: float = 10.0):
        self.socket = str(socket)
        self.timeout = timeout
        self._peer_checked = False
        grpc, self.pb, pbg = _grpc()
        self._grpc = grpc
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.runtime = pbg.RuntimeServiceStub(self.channel)
        self.images = pbg.ImageServiceStub(self.channel)

    def __enter__(self) -> "CriClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    # errors ------------------------------------------------------------------------------------

    def _error(self, exc, what: str) -> CriError:
        code = exc.code()
        details = exc.details() or str(code)
        if code == self._grpc.StatusCode.UNAVAILABLE:
            return CriUnavailable(f"containerd does not answer on {self.socket} ({what}): {details}")
        if code == self._grpc.StatusCode.UNIMPLEMENTED:
            return CriPluginNotOk(f"containerd on {self.socket} does not serve CRI ({what}): {details}")
        if code == self._grpc.StatusCode.DEADLINE_EXCEEDED:
            return CriUnavailable(f"containerd on {self.socket} did not answer {what} in time", None)
        if "no runtime for" in details and "is configured" in details:
            # the exact error a RuntimeClass with an unknown handler gives the kubelet
            return HandlerNotConfigured(f"{what}: {details}")
        return CriError(f"{what} failed: {details}")

    def _call(self, method, request, what: str, timeout: float | None = None):
        if not self._peer_checked:
            untrusted = untrusted_peer(self.socket)
            if untrusted:
                raise CriError(f"not trusted: {untrusted}",
                               "containerd runs as root: find who serves that socket and point nodeagent at the real one")
            self._peer_checked = True
        try:
            return method(request, timeout=timeout or self.timeout)
        except self._grpc.RpcError as exc:
            raise self._error(exc, what) from None

    # status ------------------------------------------------------------------------------------

    def status(self) -> CriStatus:
        """CRI Status(verbose) plus containerd's own view; never raises for a sick daemon."""
        st = CriStatus(socket=self.socket)
        if not os.path.exists(self.socket):
            st.reason = f"no socket at {self.socket}"
            return st
        untrusted = untrusted_peer(self.socket)
        if untrusted:
            st.reason = f"not trusted: {untrusted}"
            return st
        try:
            st.runtime_version = _containerd_version(self.channel, self.timeout)
            st.answers = True
        except self._grpc.RpcError as exc:
            st.reason = f"containerd does not answer on {self.socket}: {exc.details() or exc.code()}"
            return st
        try:
            resp = self.runtime.Status(self.pb.StatusRequest(verbose=True), timeout=self.timeout)
        except self._grpc.RpcError as exc:
            if exc.code() != self._grpc.StatusCode.UNIMPLEMENTED:
                st.reason = f"CRI Status failed: {exc.details() or exc.code()}"
                return st
            st.reason = "containerd answers but its CRI plugin is not loaded (CRI calls return UNIMPLEMENTED)"
            try:
                errs = _cri_plugin_errors(self.channel, self.timeout)
            except (self._grpc.RpcError, ValueError):
                errs = {}
            if errs:
                st.reason += ": " + "; ".join(f"{k}: {v}" for k, v in sorted(errs.items()))
            return st
        st.plugin_ok = True
        st.conditions = [Condition(c.type, c.status, c.reason, c.message) for c in resp.status.conditions]
        st.ready = any(c.type == "RuntimeReady" and c.status for c in st.conditions)
        if not st.ready:
            bad = next((c for c in st.conditions if c.type == "RuntimeReady"), None)
            st.reason = "CRI runtime not ready" + (f": {bad.reason} {bad.message}".rstrip() if bad else "")
        try:
            st.config = json.loads(resp.info.get("config", "{}"))
        except ValueError:
            st.config = {}
        st.handlers = set(st.runtime_types())
        # containerd 2.x also lists handlers explicitly; the default one has an empty name
        st.handlers |= {h.name for h in getattr(resp, "runtime_handlers", []) if h.name}
        return st

    # pods --------------------------------------------------------------------------------------

    def run_pod(self, handler: str, name: str = "verify", *, namespace: str = VERIFY_NAMESPACE,
                log_directory: str | None = None, timeout: float | None = None) -> Pod:
        """RunPodSandbox with a runtime handler on the host network (no CNI needed, no hostname).

        A hostname is left unset on purpose: with host networking containerd refuses to set one.
        """
        pb = self.pb
        uid = uuid.uuid4().hex
        log_directory = log_directory or f"/run/nodeagent/verify/{uid}"
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
            log_directory=log_directory,
            labels={"app.kubernetes.io/managed-by": "nodeagent"},
            linux=pb.LinuxPodSandboxConfig(
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.NamespaceMode.NODE)
                )
            ),
        )
        resp = self._call(
            self.runtime.RunPodSandbox,
            pb.RunPodSandboxRequest(config=config, runtime_handler=handler),
            f"RunPodSandbox with handler {handler!r}",
            timeout,
        )
        return Pod(resp.pod_sandbox_id, handler, name, log_directory, config)

    def pod_state(self, pod_id: str) -> str:
        resp = self._call(self.runtime.PodSandboxStatus, self.pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id),
                          "PodSandboxStatus")
        return self.pb.PodSandboxState.Name(resp.status.state)

    def list_pods(self) -> list[Any]:
        return list(self._call(self.runtime.ListPodSandbox, self.pb.ListPodSandboxRequest(), "ListPodSandbox").items)

    def stop_pod(self, pod_id: str) -> None:
        self._call(self.runtime.StopPodSandbox, self.pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), "StopPodSandbox",
                   max(self.timeout, 30))

    def remove_pod(self, pod_id: str) -> None:
        self._call(self.runtime.RemovePodSandbox, self.pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id),
                   "RemovePodSandbox", max(self.timeout, 30))

    def destroy_pod(self, pod: Pod | str) -> None:
        """Stop and remove a pod, tolerating one that is already gone."""
        pod_id = pod.id if isinstance(pod, Pod) else pod
        for step in (self.stop_pod, self.remove_pod):
            try:
                step(pod_id)
            except CriError as exc:
                if "not found" not in exc.message:
                    raise

    # containers --------------------------------------------------------------------------------

    def image_present(self, image: str) -> bool:
        resp = self._call(self.images.ImageStatus, self.pb.ImageStatusRequest(image=self.pb.ImageSpec(image=image)),
                          f"ImageStatus {image}")
        return resp.HasField("image")

    def run_container(self, pod: Pod, image: str, command: list[str], *, name: str = "probe",
                      timeout: float = 30.0) -> ContainerRun:
        """Create and start a container in `pod`, wait for it to exit, return its exit code and log."""
        pb = self.pb
        log_name = f"{name}.log"
        cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0),
            image=pb.ImageSpec(image=image),
            command=command,
            log_path=log_name,
        )
        created = self._call(
            self.runtime.CreateContainer,
            pb.CreateContainerRequest(pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config),
            f"CreateContainer in a {pod.handler!r} pod",
        )
        cid = created.container_id
        try:
            self._call(self.runtime.StartContainer, pb.StartContainerRequest(container_id=cid), "StartContainer")
            deadline = time.monotonic() + timeout
            status = None
            while time.monotonic() < deadline:
                status = self._call(self.runtime.ContainerStatus, pb.ContainerStatusRequest(container_id=cid),
                                    "ContainerStatus").status
                if status.state == pb.ContainerState.CONTAINER_EXITED:
                    break
                time.sleep(0.02)
            else:
                raise CriError(f"container {command!r} in a {pod.handler!r} pod did not exit within {timeout:.0f}s",
                               "check the runtime's shim and the node's load")
            log_path = status.log_path or os.path.join(pod.log_directory, log_name)
            return ContainerRun(status.exit_code, read_cri_log(self.read_log_file(log_path)), log_path)
        finally:
            try:
                self._call(self.runtime.RemoveContainer, pb.RemoveContainerRequest(container_id=cid), "RemoveContainer")
            except CriError:
                pass

    def read_log_file(self, path: str) -> str:
        """Read a file as containerd sees it: through /proc/<containerd>/root when we can, else directly.

        containerd may live in another mount namespace (a node seen from a DaemonSet, a test
        daemon with a private /run); SO_PEERCRED names its PID in ours.
        """
        candidates = []
        pid = peer_pid(self.socket)
        if pid:
            candidates.append(Path(f"/proc/{pid}/root") / path.lstrip("/"))
        candidates.append(Path(path))
        last: OSError | None = None
        for candidate in candidates:
            try:
                return candidate.read_text(errors="replace")
            except OSError as exc:
                last = exc
        raise CriError(f"cannot read the container log {path}: {last}", "run nodeagent where it can see containerd's files")


def read_cri_log(text: str) -> str:
    """The payload of a CRI log file (`<time> <stream> <P|F> <text>` per line), partial lines joined."""
    out: list[str] = []
    pending = ""
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3:
            continue
        tag, payload = parts[2], parts[3] if len(parts) > 3 else ""
        if tag == "P":
            pending += payload
            continue
        out.append(pending + payload)
        pending = ""
    if pending:
        out.append(pending)
    return "\n".join(out) + ("\n" if out else "")


def socket_for(host, configured: str | None, detected: str | None = None) -> str:
    """containerd's socket as reachable from here: `configured` (--containerd-socket), else the
    detected one, else the default; joined with --root (a DaemonSet reaches the node's socket under /host)."""
    return str(host.path(configured or detected or DEFAULT_SOCKET))


def cri_status(socket: str | os.PathLike = DEFAULT_SOCKET, timeout: float = 5.0) -> CriStatus:
    """One CRI status probe of the containerd behind `socket` (see CriStatus)."""
    if not os.path.exists(socket):  # nothing to speak to: spare the grpc imports (~65 ms, ~18 MB)
        return CriStatus(socket=str(socket), reason=f"no socket at {socket}")
    with CriClient(socket, timeout) as client:
        return client.status()
