"""Restart containerd the way its distribution runs it, and survive systemd's start limit.

`--restart auto|systemd|none`:
- `auto`: the unit of the flavor (containerd.service; k3s or k3s-agent; rke2-server or rke2-agent;
  snap.microk8s.daemon-containerd); k0s needs none (it reloads its containerd.d drop-ins itself).
- `systemd`: a systemd restart of that unit, k0s included (k0sworker / k0scontroller).
- `none`: restart nothing; the result says a restart is pending.

How we reach the node's systemd (first that works):
1. `--root` is this machine's `/`: `systemctl`.
2. `<root>/run/systemd/private` exists: systemd's private D-Bus socket, peer to peer
   (nodeagent.sdbus). From a DaemonSet this needs the node's /run (or the whole root) mounted and
   uid 0, but no hostPID and no privileged container. (systemd drops peers whose PID it cannot
   see, so the agent must run in the node's PID namespace or a child of it — any pod does. When
   that systemd instead runs in a PID namespace nested below ours, e.g. a node container seen from
   its host, we nsenter its PID, found through the socket's SO_PEERCRED.)
3. PID 1 in our PID namespace is the node's init (`hostPID: true`): `nsenter -t 1 -m -u -i -n -p
   systemctl` (needs `privileged: true` as well).

systemd refuses a 6th start within 10 s (start-limit-hit, StartLimitBurst/IntervalSec): we then
`reset-failed` the unit and try again with a growing pause, a bounded number of times.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from nodeagent.errors import CommandFailed, NodeagentError
from nodeagent.host import HostRoot
from nodeagent.run import run

log = structlog.get_logger(__name__)

# flavor -> units to consider, in order; the active (else enabled, else loaded) one is restarted
UNITS: dict[str, tuple[str, ...]] = {
    "containerd": ("containerd.service",),
    "k3s": ("k3s.service", "k3s-agent.service"),
    "rke2": ("rke2-server.service", "rke2-agent.service"),
    "microk8s": ("snap.microk8s.daemon-containerd.service",),
    "k0s": ("k0sworker.service", "k0scontroller.service"),
}
# flavors whose containerd picks up our change without a restart under --restart auto
NO_RESTART_NEEDED = {"k0s": "k0s watches /etc/k0s/containerd.d and reloads containerd itself"}

DAEMONSET_HINT = (
    "give the agent the node's /run (hostPath /, mounted at --root) and run it as uid 0 so it can use "
    "systemd's private socket <root>/run/systemd/private; or hostPID + privileged for nsenter; "
    "or use --restart none and restart containerd yourself"
)


class ServiceError(NodeagentError):
    default_hint = "check the unit with `systemctl status <unit>` and `journalctl -u <unit>` on the node"


@dataclass
class UnitState:
    load_state: str = ""  # loaded | not-found | masked ...
    active_state: str = ""  # active | activating | failed | inactive ...
    sub_state: str = ""
    result: str = ""  # success | start-limit-hit | exit-code ...
    main_pid: int = 0
    unit_file_state: str = ""  # enabled | disabled | static ...


@dataclass
class RestartResult:
    method: str  # "systemctl" | "dbus" | "nsenter" | "none"
    unit: str | None
    old_pid: int | None = None
    new_pid: int | None = None
    restarted: bool = False
    pending: bool = False  # a restart is needed but was not done (--restart none)
    attempts: int = 0
    start_limit_resets: int = 0
    elapsed: float = 0.0
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "unit": self.unit,
            "old_pid": self.old_pid,
            "new_pid": self.new_pid,
            "restarted": self.restarted,
            "pending": self.pending,
            "attempts": self.attempts,
            "start_limit_resets": self.start_limit_resets,
            "elapsed": round(self.elapsed, 3),
            "reason": self.reason,
        }


class Transport(Protocol):
    name: str

    def state(self, unit: str) -> UnitState: ...

    def restart(self, unit: str) -> None: ...

    def reset_failed(self, unit: str) -> None: ...


# --- transports ---------------------------------------------------------------------------------

_SHOW_PROPS = ("LoadState", "ActiveState", "SubState", "Result", "MainPID", "UnitFileState")


class SystemctlTransport:
    """`systemctl`, directly (live root) or through `nsenter -t 1` (hostPID DaemonSet)."""

    def __init__(self, prefix: list[str] | None = None, name: str = "systemctl"):
        self.prefix = list(prefix or [])
        self.name = name
        # what the restart log names as the way in: "systemctl" or "nsenter -t PID ... systemctl"
        self.endpoint = " ".join([*self.prefix[:3], "systemctl"])

    def _systemctl(self, *args: str, check: bool = True, timeout: float = 90):
        return run([*self.prefix, "systemctl", *args], check=check, timeout=timeout,
                   env={**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"})

    def state(self, unit: str) -> UnitState:
        out = self._systemctl("show", unit, *(f"--property={p}" for p in _SHOW_PROPS)).stdout
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return UnitState(values.get("LoadState", ""), values.get("ActiveState", ""), values.get("SubState", ""),
                         values.get("Result", ""), int(values.get("MainPID") or 0), values.get("UnitFileState", ""))

    def restart(self, unit: str) -> None:
        # --no-block: we wait ourselves (bounded) and read the outcome from the unit's state
        self._systemctl("restart", "--no-block", unit)

    def reset_failed(self, unit: str) -> None:
        self._systemctl("reset-failed", unit, check=False)


class DbusTransport:
    """systemd's private socket under the host root (no systemctl, no hostPID needed)."""

    name = "dbus"

    def __init__(self, socket_path: str):
        self.socket_path = socket_path
        self.endpoint = socket_path  # named in the restart log: the D-Bus socket used

    def _bus(self, attempts: int = 3):
        """Connect, retrying a connection systemd did not answer (seen under heavy load: the
        AUTH reply never came). Nothing was sent to systemd yet, so retrying is always safe."""
        from nodeagent.sdbus import DbusError, SystemdBus

        for attempt in range(1, attempts + 1):
            try:
                return SystemdBus(self.socket_path, timeout=5.0)
            except DbusError as exc:
                if attempt == attempts or "refused authentication" in exc.message:
                    raise
                log.warning("systemd private socket did not answer; retrying", error=exc.message, attempt=attempt)
                time.sleep(0.2 * attempt)

    def state(self, unit: str) -> UnitState:
        unit_iface, svc_iface = "org.freedesktop.systemd1.Unit", "org.freedesktop.systemd1.Service"
        with self._bus() as bus:
            path = bus.unit_path(unit)
            st = UnitState(
                load_state=bus.get(path, unit_iface, "LoadState"),
                active_state=bus.get(path, unit_iface, "ActiveState"),
                sub_state=bus.get(path, unit_iface, "SubState"),
                unit_file_state=bus.get(path, unit_iface, "UnitFileState"),
            )
            if st.load_state == "loaded" and unit.endswith(".service"):
                st.result = bus.get(path, svc_iface, "Result")
                st.main_pid = int(bus.get(path, svc_iface, "MainPID"))
            return st

    def restart(self, unit: str) -> None:
        with self._bus() as bus:
            bus.manager("RestartUnit", "ss", unit, "replace")

    def reset_failed(self, unit: str) -> None:
        from nodeagent.sdbus import DbusError

        with self._bus() as bus:
            try:
                bus.manager("ResetFailedUnit", "s", unit)
            except DbusError:
                pass  # not failed: nothing to reset


def _pid1_is_hosts_init(host: HostRoot) -> bool:
    """True when /proc/1 in our PID namespace is the init of the host under --root (hostPID)."""
    try:
        return os.path.samefile("/proc/1/root", host.root) and _comm(1) == "systemd"
    except OSError:
        return False


def _systemd_below_us(socket_path: str) -> int | None:
    """systemd's PID (in our namespace) when it lives in a PID namespace nested below ours, else None.

    SO_PEERCRED names the listening systemd: pid 0 means it is above us (it sees us: a pod),
    a single NSpid entry means the same namespace (hostPID); more entries mean it is below us.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(2)
        sock.connect(socket_path)
        pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except OSError:
        return None
    finally:
        sock.close()
    if pid <= 0 or uid != 0:
        return None  # we nsenter only a root peer (systemd); anything else is not the node's init
    try:
        with open(f"/proc/{pid}/status") as fh:
            nspid = next((line.split()[1:] for line in fh if line.startswith("NSpid:")), [])
    except OSError:
        return None
    return pid if len(nspid) > 1 else None


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def choose_transport(host: HostRoot) -> Transport:
    """The least-privileged way to the node's systemd from where we run (see the module doc)."""
    if host.is_live:
        if not os.path.isdir("/run/systemd/system"):
            raise ServiceError("systemd is not running on this machine, so containerd cannot be restarted through it",
                               "restart containerd with your init system, then run `nodeagent verify`; or use --restart none")
        return SystemctlTransport()
    private = host.path("/run/systemd/private")
    if private.is_socket():
        nested_pid = _systemd_below_us(str(private))
        if nested_pid:
            # systemd runs in a PID namespace nested inside ours (a test harness, a node container
            # seen from its host): it drops peers it cannot see, but we can enter its namespaces
            return SystemctlTransport(["nsenter", "-t", str(nested_pid), "-m", "-u", "-i", "-n", "-p", "--"],
                                      name="nsenter")
        return DbusTransport(str(private))
    if _pid1_is_hosts_init(host):
        return SystemctlTransport(["nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "--"], name="nsenter")
    raise ServiceError(f"cannot reach the node's systemd from here (no {host.to_host(private)} under {host.root}, "
                       "and PID 1 is not the node's init)", DAEMONSET_HINT)


def pick_unit(transport: Transport, flavor: str) -> str:
    """The flavor's unit that runs here: active first, then enabled, then merely loaded."""
    candidates = UNITS.get(flavor)
    if not candidates:
        raise ServiceError(f"no systemd unit known for containerd flavor {flavor!r}",
                           "use --restart none and restart containerd yourself")
    states = {u: transport.state(u) for u in candidates}
    for test in (lambda s: s.active_state in ("active", "activating", "reloading"),
                 lambda s: s.unit_file_state in ("enabled", "enabled-runtime", "static"),
                 lambda s: s.load_state == "loaded"):
        for unit in candidates:
            if test(states[unit]):
                return unit
    raise ServiceError(f"none of the units {', '.join(candidates)} exists on this node",
                       "check the containerd flavor (`nodeagent detect`) or pass --restart none")


# --- restart ------------------------------------------------------------------------------------


def _wait_restarted(transport: Transport, unit: str, old_pid: int, deadline: float) -> UnitState:
    """Poll until the unit is active with a new main PID, or failed, or the deadline passes."""
    st = transport.state(unit)
    delay = 0.05
    while time.monotonic() < deadline:
        if st.active_state == "active" and st.main_pid and st.main_pid != old_pid:
            return st
        if st.active_state == "failed":
            return st
        time.sleep(delay)
        delay = min(0.5, delay * 1.5)
        st = transport.state(unit)
    return st


def restart_unit(transport: Transport, unit: str, *, timeout: float = 60.0, max_start_limit_resets: int = 3,
                 backoff: float = 0.5) -> RestartResult:
    """Restart `unit` and wait for a new main PID; reset the start limit when systemd hit it."""
    start = time.monotonic()
    deadline = start + timeout
    before = transport.state(unit)
    if before.load_state != "loaded":
        raise ServiceError(f"unit {unit} is {before.load_state or 'unknown'} on this node",
                           "check the containerd flavor (`nodeagent detect`) or pass --restart none")
    result = RestartResult(method=transport.name, unit=unit, old_pid=before.main_pid or None)
    if before.active_state == "failed":
        # clear the old failure so polling sees the new start, not the stale state; a crash loop
        # before us may also have used up the start limit
        transport.reset_failed(unit)
        result.start_limit_resets += before.result == "start-limit-hit"
    while True:
        result.attempts += 1
        try:
            transport.restart(unit)
        except (CommandFailed, NodeagentError) as exc:
            # systemctl/D-Bus refuse the job outright when the limit is hit ("Start request repeated too quickly")
            if "too quickly" not in exc.message and "start-limit" not in exc.message.lower():
                raise ServiceError(f"restarting {unit} failed: {exc.message}") from None
            st = transport.state(unit)
        else:
            st = _wait_restarted(transport, unit, before.main_pid, deadline)
        if st.active_state == "active" and st.main_pid and st.main_pid != before.main_pid:
            result.new_pid, result.restarted = st.main_pid, True
            break
        if st.result == "start-limit-hit" and result.start_limit_resets < max_start_limit_resets \
                and time.monotonic() < deadline:
            pause = backoff * (2 ** result.start_limit_resets)
            log.warning("systemd start limit hit; resetting", unit=unit, pause=pause)
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            transport.reset_failed(unit)
            result.start_limit_resets += 1
            continue
        result.elapsed = time.monotonic() - start
        what = f"{st.active_state}/{st.sub_state}" + (f", result {st.result}" if st.result else "")
        raise ServiceError(f"{unit} did not come back after a restart within {timeout:.0f}s ({what})",
                           f"see `journalctl -u {unit}` on the node; the previous config can be restored "
                           "from nodeagent's backup")
    result.elapsed = time.monotonic() - start
    # `method` and `via` say which way the node's systemd was reached (dbus, nsenter, systemctl):
    # the DaemonSet test reads this line to prove a pod without hostPID restarted over D-Bus
    log.info("restarted", unit=unit, method=result.method, via=getattr(transport, "endpoint", transport.name),
             old_pid=result.old_pid, new_pid=result.new_pid,
             attempts=result.attempts, resets=result.start_limit_resets, elapsed=round(result.elapsed, 3))
    return result


def restart_containerd(host: HostRoot, flavor: str, mode: str, timeout: float, *,
                       transport: Transport | None = None) -> RestartResult:
    """Restart the node's containerd of this flavor per `mode` (--restart: auto|systemd|none),
    waiting up to `timeout` seconds for its new main PID."""
    if mode == "none":
        return RestartResult(method="none", unit=None, pending=True,
                             reason="--restart none: containerd must be restarted for the change to take effect")
    if mode == "auto" and flavor in NO_RESTART_NEEDED:
        return RestartResult(method="none", unit=None, reason=NO_RESTART_NEEDED[flavor])
    transport = transport or choose_transport(host)
    unit = pick_unit(transport, flavor)
    return restart_unit(transport, unit, timeout=timeout)
