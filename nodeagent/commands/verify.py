"""`nodeagent verify`: start a sandbox per runtime and compare its kernel with the host's.

gVisor: `runsc do` (no image needed). Kata (or any handler): through CRI with `--image`.
`--runtime all` checks what is installed and skips the rest with a reason; naming a runtime
checks it or fails. Exit 2 when a checked runtime is not isolated or cannot start.
"""

from __future__ import annotations

import functools
from typing import Any

from nodeagent import runtimes as runtime_plugins, verify
from nodeagent.errors import EXIT_FAIL, EXIT_OK, NodeagentError
from nodeagent.host import HostRoot
from nodeagent.output import Result, emit
from nodeagent.runtimes import selected
from nodeagent.runtimes.base import VerifyContext
from nodeagent.dicts import table


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
        for handler, shim in table(c.detail, "shims").items():  # a runtime's further handlers
            state = "ok" if shim["ok"] else "FAIL"
            kernel = f"sandbox kernel {shim['sandbox_kernel']}" if shim["sandbox_kernel"] else shim["reason"] or ""
            lines.append(f"{'':<7} {state:<5} {handler}: {kernel}".rstrip())
    return "\n".join(lines)


def run_checks(settings, host: HostRoot, image: str | None = None,
               explicit: bool | None = None) -> list[verify.RuntimeCheck]:
    """The checks `verify` makes; `explicit=False` skips what is not installed (or needs an image)
    even for a runtime named in --runtime (the agent: it has no --image)."""
    wanted = selected(settings.runtime)
    socket = functools.cache(lambda: _socket(host, settings))
    named = settings.runtime != "all" if explicit is None else explicit
    checks: list[verify.RuntimeCheck] = []
    for rt in runtime_plugins.ALL:
        if rt.name in wanted:
            ctx = VerifyContext(host, image, socket, timeout=settings.health_timeout, explicit=named)
            checks.append(rt.verify(ctx, rt.options(settings)))
    return checks


def failed_checks(checks: list[verify.RuntimeCheck]) -> str | None:
    """What failed, as one line; None when every check that ran passed."""
    failed = [c for c in checks if not c.skipped and not c.ok]
    return "; ".join(f"{c.runtime}: {c.reason}" for c in failed) or None


def run(settings, args) -> Result:
    host = HostRoot(settings.root)
    count = getattr(args, "measure", None)
    if count is not None:
        from nodeagent.commands.verify_measure import check_count

        check_count(count)
    checks = run_checks(settings, host, getattr(args, "image", None))
    checked = [c for c in checks if not c.skipped]
    ok = bool(checked) and all(c.ok for c in checked)
    data: dict[str, Any] = {"ok": ok, "runtimes": {c.runtime: c.as_dict() for c in checks}}
    text = _text(checks)
    if not checked:
        text += "\nnothing verified: no sandbox runtime is installed on this node"
    if count is not None:
        from nodeagent.commands.verify_measure import measure_checked

        text += "\n" + measure_checked(host, settings, checks, count, data, getattr(args, "out", None))
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
