"""`nodeagent verify`: start a sandbox per runtime and compare its kernel with the host's.

gVisor: `runsc do` (no image needed). Kata (or any handler): through CRI with `--image`.
`--runtime all` checks what is installed and skips the rest with a reason; naming a runtime
checks it or fails. Exit 2 when a checked runtime is not isolated or cannot start.
"""

from __future__ import annotations

from typing import Any

from nodeagent import verify
from nodeagent.errors import EXIT_FAIL, EXIT_OK, NodeagentError
from nodeagent.host import HostRoot
from nodeagent.output import Result, emit


class VerifyFailed(NodeagentError):
    """A runtime that should be checked is not isolated or did not start (the report is on stdout)."""

    default_hint = "see the per-runtime reasons above; `nodeagent doctor` checks the installation"

def _socket(host: HostRoot, settings) -> str:
    """containerd's socket as we can reach it (under --root when the root is not ours)."""
    from nodeagent.containerd.cri import socket_for

    detected = None
    if not settings.containerd_socket:
        try:
            from nodeagent.detect import containerd as containerd_probe

            detected = containerd_probe.probe(host, settings.containerd_config).socket
        except NodeagentError:
            pass
    return socket_for(host, settings.containerd_socket, detected)


def _kata_installed(host: HostRoot, settings, socket: str) -> tuple[bool, str]:
    from nodeagent.containerd.observer import ask_cri

    status = ask_cri(socket, timeout=5)
    if status.ok:
        if settings.kata_handler in status.handlers:
            return True, ""
        return False, f"containerd does not serve a {settings.kata_handler!r} handler (Kata is not installed)"
    return False, f"cannot ask containerd which handlers it serves: {status.reason}"


def _check_kata(host: HostRoot, settings, image: str | None, explicit: bool) -> verify.RuntimeCheck:
    socket = _socket(host, settings)
    installed, why = _kata_installed(host, settings, socket)
    skip = verify.RuntimeCheck("kata", "cri", host_kernel=verify.host_kernel(host),
                               detail={"handler": settings.kata_handler, "socket": socket})
    if not installed:
        skip.reason, skip.skipped = why, not explicit
        return skip
    if not image:
        skip.reason = "Kata is checked through CRI and needs an image: pass --image (one present on the node)"
        skip.skipped = not explicit
        return skip
    return verify.verify_cri("kata", settings.kata_handler, socket, image, host, timeout=settings.health_timeout)


def _check_gvisor(host: HostRoot, settings, explicit: bool) -> verify.RuntimeCheck:
    check = verify.verify_gvisor(host, platform=settings.gvisor_platform, timeout=settings.health_timeout)
    if check.detail.get("runsc") is None and not explicit:
        check.skipped = True
    return check


def _text(checks: list[verify.RuntimeCheck]) -> str:
    lines = []
    for c in checks:
        status = "skip" if c.skipped else ("ok" if c.ok else "FAIL")
        if c.sandbox_kernel:
            how = "runsc do" if c.method == "runsc-do" else f"CRI handler {c.detail.get('handler')}"
            lines.append(f"{c.runtime:<7} {status:<5} sandbox kernel {c.sandbox_kernel} "
                         f"(host {c.host_kernel}) via {how}")
        else:
            lines.append(f"{c.runtime:<7} {status:<5} {c.reason or ''}".rstrip())
        if c.sandbox_kernel and c.reason:
            lines.append(f"{'':<13} {c.reason}")
        for d in c.dmesg[:3]:
            lines.append(f"{'':<13} dmesg: {d.strip()}")
    return "\n".join(lines)


def run(settings, args) -> Result:
    host = HostRoot(settings.root)
    wanted = settings.runtime
    image = getattr(args, "image", None)
    checks: list[verify.RuntimeCheck] = []
    if wanted in ("gvisor", "all"):
        checks.append(_check_gvisor(host, settings, explicit=wanted == "gvisor"))
    if wanted in ("kata", "all"):
        checks.append(_check_kata(host, settings, image, explicit=wanted == "kata"))
    checked = [c for c in checks if not c.skipped]
    ok = bool(checked) and all(c.ok for c in checked)
    data: dict[str, Any] = {"ok": ok, "runtimes": {c.runtime: c.as_dict() for c in checks}}
    text = _text(checks)
    if not checked:
        text += "\nnothing verified: no sandbox runtime is installed on this node"
    result = Result(data, text, exit_code=EXIT_OK if ok else EXIT_FAIL)
    if ok:
        return result
    # the report still goes to stdout (JSON stays parseable), then the usual error/hint lines
    emit(result, settings.output)
    failed = [c for c in checked if not c.ok]
    if not failed:
        raise VerifyFailed("nothing was verified: no sandbox runtime is installed on this node",
                           "install one (`nodeagent install`), or name it with --runtime to see why it is missing")
    first = failed[0]
    raise VerifyFailed("; ".join(f"{c.runtime}: {c.reason}" for c in failed),
                       _hint(first))


def _hint(check: verify.RuntimeCheck) -> str:
    reason = check.reason or ""
    if "--image" in reason:
        return "pass --image with an image present in containerd's k8s.io namespace"
    if "not installed" in reason or "not found" in reason:
        return f"install it: nodeagent install --runtime {check.runtime}"
    if "not isolated" in reason:
        return "check the handler's runtime_type and shim in containerd's config (`nodeagent plan`), then reinstall"
    if check.method == "runsc-do":
        return "run `runsc --network=none do uname -r` on the node to see why gVisor cannot start"
    return "check containerd's log (journalctl -u containerd) for the sandbox's error"
