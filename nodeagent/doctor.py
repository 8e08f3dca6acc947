"""`doctor`'s checks: each turns host facts into ok / warn / fail / skip, a one-line
summary and a remediation hint. Read-only: nothing here writes to the host.

Every check is a small function of (facts, context); they share one detect pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

from nodeagent.containerd import model, tomlparse
from nodeagent.containerd.observer import ContainerdView, observe
from nodeagent.detect import detect_host, trust, vsock
from nodeagent.dicts import dig
from nodeagent.errors import CommandFailed, ConfigError, NodeagentError
from nodeagent.facts import HostFacts, RuntimeVerdict
from nodeagent.host import HostRoot
from nodeagent.output import table
from nodeagent.run import run
from nodeagent.runtimes import gvisor, runsc_toml
from nodeagent.settings import Settings

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
# containerd's PATH when started by systemd (the unit sets none, so systemd's default applies)


@dataclass
class Check:
    id: str
    status: str
    summary: str
    hint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Context:
    host: HostRoot
    settings: Settings
    facts: HostFacts
    view: ContainerdView  # what containerd registers, serves and finds shims for, read once


# ---- virtualization -------------------------------------------------------------------------


def check_kvm(ctx: Context) -> Check:
    v = ctx.facts.virtualization
    if v.kvm_usable:
        return Check("kvm", OK, f"/dev/kvm answers (API {v.kvm_api_version}, module {v.kvm_module or 'unknown'})")
    reason = "; ".join(r for r in v.reasons if "vsock" not in r) or "KVM is not usable"
    if not v.kvm_device:
        hint = "load kvm_intel/kvm_amd (or enable nested virtualization on the hypervisor); gVisor still runs on systrap"
    else:
        hint = "make /dev/kvm the real character device (10,232) readable by root and not in use; gVisor still runs on systrap"
    return Check("kvm", WARN, f"KVM not usable: {reason} (Kata cannot run)", hint)


def check_nested(ctx: Context) -> Check:
    v = ctx.facts.virtualization
    if not v.in_vm:
        state = {True: "enabled", False: "disabled", None: "unknown"}[v.nested]
        return Check("nested", OK, f"bare metal; {v.kvm_module or 'kvm'} nested guests {state}")
    if v.kvm_usable:
        return Check(
            "nested", WARN,
            f"KVM runs nested inside a VM ({v.kvm_module or 'kvm'}): sandboxes work but cost more",
            "fine for dev/test; for production sandboxes prefer bare-metal nodes (gVisor uses systrap here)",
        )
    return Check(
        "nested", WARN, "this node is a VM without usable KVM: nested virtualization is off",
        "enable nested virtualization for this VM on the hypervisor/cloud (e.g. kvm_intel nested=1 on the L0 host)",
    )


def check_vsock(ctx: Context) -> Check:
    v = ctx.facts.virtualization
    if v.vhost_vsock:
        return Check("vhost-vsock", OK, "/dev/vhost-vsock answers (Kata can reach its guest agent)")
    extra = " (the guest-side vsock modules loaded here do not count)" if v.guest_vsock else ""
    state = "unusable" if any(r.startswith(vsock.UNUSABLE) for r in v.reasons) else "missing"
    return Check(
        "vhost-vsock", WARN, f"host-side vsock /dev/vhost-vsock {state}: Kata cannot run{extra}; gVisor does not need it",
        "modprobe vhost_vsock and persist it in /etc/modules-load.d/vhost_vsock.conf",
    )


def check_gvisor_kernel(ctx: Context) -> Check:
    g = ctx.facts.runtimes["gvisor"]
    minimum = ".".join(map(str, gvisor.MIN_KERNEL))
    if g.eligible:
        return Check("gvisor-host", OK, f"kernel {ctx.facts.kernel} >= {minimum}, {ctx.facts.arch}: gVisor can run on {g.platform}")
    return Check("gvisor-host", FAIL, "gVisor cannot run: " + "; ".join(g.reasons),
                 f"gVisor needs Linux {minimum}+ on amd64 or arm64: upgrade the node's kernel or use another node")


# ---- cgroup driver ----------------------------------------------------------------------------


def _runsc_path(ctx: Context) -> str:
    """runsc.toml as the runsc handler names it (ConfigPath), else where nodeagent writes it."""
    handler = ctx.view.registered.get(ctx.settings.gvisor_handler, {})
    options = handler.get("options") if isinstance(handler.get("options"), dict) else {}
    return options["ConfigPath"] if isinstance(options.get("ConfigPath"), str) else runsc_toml.PATH


def _runsc_systemd_cgroup(ctx: Context) -> tuple[str, bool | None, str | None]:
    """(path, runsc's systemd-cgroup or None when unset/absent, parse error)."""
    path = _runsc_path(ctx)
    raw = ctx.host.read_bytes(path)
    if raw is None:
        return path, None, None
    try:
        data = tomlparse.parse(raw, path)
    except ConfigError as exc:
        return path, None, exc.message
    value = dig(data, "runsc_config", "systemd-cgroup")
    if isinstance(value, str):
        value = value.strip().lower() == "true"
    return path, value if isinstance(value, bool) else False, None


def check_cgroup_driver(ctx: Context) -> Check:
    ctd = ctx.facts.containerd
    runc_systemd = bool(ctd.systemd_cgroup)  # unset = containerd's default, cgroupfs
    runc_driver = "systemd" if runc_systemd else "cgroupfs"
    path, runsc_systemd, error = _runsc_systemd_cgroup(ctx)
    if error:
        return Check("cgroup-driver", FAIL, error, f"fix the syntax of {path} (gVisor's shim cannot read it)")
    if runc_systemd and not ctx.facts.systemd:
        return Check(
            "cgroup-driver", FAIL, "runc uses SystemdCgroup = true but systemd is not the running init",
            "set SystemdCgroup = false in containerd's runc options, or run containerd under systemd",
        )
    if runsc_systemd is None:
        return Check("cgroup-driver", OK, f"runc uses {runc_driver}; gVisor not configured yet ({path} absent)")
    runsc_driver = "systemd" if runsc_systemd else "cgroupfs"
    if runsc_systemd != runc_systemd:
        return Check(
            "cgroup-driver", FAIL, f"cgroup drivers differ: runc uses {runc_driver}, gVisor ({path}) uses {runsc_driver}",
            f'set systemd-cgroup = "{str(runc_systemd).lower()}" under [runsc_config] in {path} to match runc '
            "(mismatched drivers break gVisor pods: https://github.com/google/gvisor/issues/7671)",
        )
    return Check("cgroup-driver", OK, f"runc and gVisor both use {runc_driver}")


def check_gvisor_options(ctx: Context) -> Check:
    path = _runsc_path(ctx)
    handler = ctx.view.registered.get(ctx.settings.gvisor_handler)
    status, summary, hint = gvisor.check_runsc_toml(ctx.host.read_bytes(path), path, ctx.facts,
                                                    handler if isinstance(handler, dict) else None)
    return Check("gvisor-options", status, summary, hint)


# ---- containerd -------------------------------------------------------------------------------


def check_containerd_found(ctx: Context) -> Check:
    ctd = ctx.facts.containerd
    if ctd.found:
        where = ctd.binary or f"pid {ctd.pid}"
        return Check("containerd-found", OK, f"containerd {ctd.version or '(version unknown)'} ({ctd.flavor}) at {where}")
    return Check("containerd-found", FAIL, "containerd not found on the host",
                 "install containerd (e.g. apt-get install containerd) or point --root at the node's filesystem")


def check_containerd_trust(ctx: Context) -> Check:
    """A process calling itself containerd that any user could have started is named, not used."""
    untrusted = ctx.facts.containerd.untrusted_processes
    if not untrusted:
        return Check("containerd-trust", OK, "every process named containerd runs as root from a root-owned binary"
                     if ctx.facts.containerd.running else "no untrusted process calls itself containerd")
    named = "; ".join(f"pid {p['pid']} (user {p['user']}, binary {p['binary']}): {p['reason']}" for p in untrusted)
    return Check(
        "containerd-trust", WARN, f"ignored {len(untrusted)} untrusted process(es) calling themselves containerd: {named}",
        "nodeagent never runs, edits or connects to anything such a process names; find who started it "
        f"(ps -o user,pid,args -p {','.join(str(p['pid']) for p in untrusted)}) and stop it",
    )


def check_containerd_running(ctx: Context) -> Check:
    ctd = ctx.facts.containerd
    if not ctd.found:
        return Check("containerd-running", SKIP, "containerd not found", None)
    if ctd.running:
        return Check("containerd-running", OK, f"running (pid {ctd.pid}), socket {ctd.socket}")
    hint = f"start it (systemctl start {ctd.unit or 'containerd'})"
    if not ctx.host.is_live:
        hint += "; in a pod, nodeagent reads the node's processes from <root>/proc: mount the node's / (with /proc) at --root"
    return Check("containerd-running", WARN, "containerd is not running", hint)


def _config_dump(ctx: Context, binary: str, config_path: str) -> str | None:
    """Let containerd itself validate (and merge imports); returns its error, None when fine.
    Runs the binary from its path, and only a root-controlled one (see detect.trust)."""
    verdict = trust.path_verdict(ctx.host, binary)
    if not verdict.trusted:
        return f"not running {binary}: {verdict.reason}"
    try:
        run([str(ctx.host.resolve(binary)), "--config", str(ctx.host.path(config_path)), "config", "dump"], timeout=20)
    except CommandFailed as exc:
        return exc.message
    return None


def check_containerd_config(ctx: Context) -> Check:
    ctd = ctx.facts.containerd
    path = ctd.config_path
    if not ctd.config_exists:
        if not ctd.found:
            return Check("containerd-config", SKIP, f"no containerd and no {path}", None)
        return Check("containerd-config", WARN, f"{path} does not exist: containerd runs on built-in defaults",
                     "nodeagent install will create it; or write one with `containerd config default`")
    if ctd.config_error:
        return Check("containerd-config", FAIL, f"containerd config is broken: {ctd.config_error}",
                     f"fix {path} by hand (containerd refuses to start with it), then run doctor again")
    how = "tomllib"
    if ctx.host.is_live and ctd.binary:
        error = _config_dump(ctx, ctd.binary, path)
        if error:
            return Check("containerd-config", FAIL, f"containerd rejects {path}: {error}",
                         f"fix {path}; check with `containerd --config {path} config dump`")
        how = "containerd config dump"
    imports = f", {len(ctd.config_imports)} import(s)" if ctd.config_imports else ""
    return Check("containerd-config", OK, f"{path} parses (version {ctd.config_version}{imports}; checked by {how})")


def check_handlers(ctx: Context) -> Check:
    ctd = ctx.facts.containerd
    if not ctd.found:
        return Check("handlers", SKIP, "containerd not found", None)
    handlers, error = ctx.view.registered, ctx.view.registered_error
    if error:
        return Check("handlers", FAIL, f"cannot read handlers: {error}", "fix the containerd config first")
    ours = [h for h in _our_handlers(ctx.settings) if h in handlers]
    search = ctx.view.search
    problems = []
    for name in sorted(handlers):
        body = handlers[name]
        runtime_type = body.get("runtime_type")
        if not isinstance(runtime_type, str):
            problems.append(f"{name}: no runtime_type")
            continue
        try:
            shim = model.shim_binary_for(runtime_type)
        except NodeagentError:
            problems.append(f"{name}: unexpected runtime_type {runtime_type!r}")
            continue
        if not ctx.view.shim_on_path(runtime_type):
            problems.append(f"{name}: {shim} not on containerd's PATH")
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        binary = options.get("BinaryName")
        if isinstance(binary, str) and binary:
            found = ctx.host.exists(binary) if binary.startswith("/") else ctx.host.which(binary, search)
            if not found:
                problems.append(f"{name}: BinaryName {binary} missing")
        config = options.get("ConfigPath")
        if isinstance(config, str) and config and not ctx.host.exists(config):
            problems.append(f"{name}: ConfigPath {config} missing")
    if problems:
        return Check("handlers", FAIL, "; ".join(problems),
                     f"install the missing binaries/files (containerd looks in {search}) or run `nodeagent install` again")
    if not ours:
        return Check("handlers", WARN, f"no sandbox handler registered (have: {', '.join(sorted(handlers)) or 'none'})",
                     "run `nodeagent install` to register gVisor (and Kata where eligible)")
    return Check("handlers", OK, f"registered with shims present: {', '.join(ours)}")


def _our_handlers(settings: Settings) -> list[str]:
    """Every handler the settings ask for (each runtime's, with e.g. every chosen Kata shim)."""
    from nodeagent import runtimes as runtime_plugins

    names = [settings.gvisor_handler, settings.kata_handler]
    for rt in runtime_plugins.ALL:
        try:
            names += [s.name for s in rt.handler_specs(rt.options(settings)) if s.name not in names]
        except NodeagentError:
            continue  # a bad setting: check_shim_eligibility reports it
    return names


def check_shim_eligibility(ctx: Context) -> Check:
    """Each further handler the settings choose (a Kata shim) against what it needs on this node."""
    from nodeagent import runtimes as runtime_plugins

    verdicts: dict[str, RuntimeVerdict] = {}
    for rt in runtime_plugins.ALL:
        verdicts.update(rt.variant_verdicts(ctx.facts, rt.options(ctx.settings)))
    if not verdicts:
        return Check("shim-eligibility", SKIP, "no further handlers chosen (kata_shims is empty)", None)
    bad = {h: v.reasons for h, v in verdicts.items() if not v.eligible}
    if bad:
        return Check("shim-eligibility", FAIL, "; ".join(f"{h}: {', '.join(r)}" for h, r in bad.items()),
                     "fix the reasons above or drop those shims from kata_shims; install refuses them "
                     "unless --skip-eligibility")
    return Check("shim-eligibility", OK, f"this node can run: {', '.join(verdicts)}")


def check_cri(ctx: Context) -> Check:
    """Served via CRI: only the running containerd knows whether it accepted the handlers."""
    socket = ctx.facts.containerd.socket
    if not socket or not ctx.host.exists(socket):
        return Check("cri-handlers", SKIP, f"CRI socket {socket} not reachable (containerd not running?)", None)
    status = ctx.view.cri
    if not status.answers:
        return Check("cri-handlers", SKIP, f"CRI socket {socket} not reachable: {status.reason}", None)
    if not status.plugin_ok:
        return Check("cri-handlers", FAIL, status.reason or "containerd's CRI plugin is not loaded",
                     "check containerd's log; a drop-in that replaces the CRI section (containerd#5837) is a common cause")
    if not status.ready:
        return Check("cri-handlers", FAIL, status.reason or "CRI runtime not ready", "check containerd's log (journalctl -u containerd)")
    wanted = [h for h in _our_handlers(ctx.settings) if h in ctx.view.registered]
    missing = [h for h in wanted if h not in status.handlers]
    if missing:
        return Check("cri-handlers", FAIL, f"registered in the config but not served via CRI: {', '.join(missing)}",
                     "restart containerd so it loads the config (nodeagent install --restart auto)")
    return Check("cri-handlers", OK, f"CRI serves: {', '.join(sorted(status.handlers)) or 'no handlers'}")


def check_runtimeclasses(ctx: Context) -> Check:
    """RuntimeClass name <-> handler consistency, asked of the API server (nodeagent.kube.checks)."""
    if not (ctx.settings.kubeconfig or _in_cluster()):
        return Check("runtimeclasses", SKIP, "no Kubernetes API configured", None)
    from nodeagent.kube.checks import runtimeclass_check

    status, summary, hint = runtimeclass_check(ctx.settings, sorted(ctx.view.registered))
    return Check("runtimeclasses", status, summary, hint)


def check_config_clashes(ctx: Context) -> Check:
    """Other tools' files colliding with ours or each other (nodeagent.containerd.clashes)."""
    ctd = ctx.facts.containerd
    if not ctd.config_exists or ctd.config_error:
        return Check("config-clashes", SKIP, "no readable containerd config", None)
    from nodeagent.containerd.clashes import find_clashes
    from nodeagent.containerd.imports import load_chain
    from nodeagent.containerd.inspect import containerd_major

    try:
        chain = load_chain(ctx.host, ctd.config_path, missing_ok=containerd_major(ctd.version, 1) >= 2)
    except NodeagentError as exc:
        return Check("config-clashes", SKIP, f"cannot follow imports: {exc.message}", None)
    found = find_clashes(ctx.host, chain)
    if found:
        return Check("config-clashes", WARN, "; ".join(found),
                     "keep one definition per handler in files containerd loads; a tool's own file may be rewritten "
                     "or deleted by it (nodeagent's agent mode re-adds its handlers; `nodeagent install` does too)")
    return Check("config-clashes", OK, f"no clashes among {len(chain)} config file(s)")


def _in_cluster() -> bool:
    import os

    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


CHECKS: list[Callable[[Context], Check]] = [
    check_kvm, check_nested, check_vsock, check_gvisor_kernel, check_cgroup_driver, check_gvisor_options,
    check_containerd_found, check_containerd_trust, check_containerd_running, check_containerd_config,
    check_handlers, check_cri, check_runtimeclasses, check_config_clashes, check_shim_eligibility,
]


def run_checks(host: HostRoot, settings: Settings, facts: HostFacts | None = None) -> list[Check]:
    """All checks against one detect pass; a check that crashes becomes a failed check, not a traceback."""
    facts = facts if facts is not None else detect_host(host, settings)
    socket = facts.containerd.socket
    ctx = Context(host, settings, facts, observe(host, facts.containerd, str(host.path(socket)) if socket else None))
    results = []
    for check in CHECKS:
        try:
            results.append(check(ctx))
        except NodeagentError as exc:
            results.append(Check(check.__name__.removeprefix("check_").replace("_", "-"), FAIL, exc.message, exc.hint))
    return results


def overall(checks: list[Check]) -> str:
    statuses = {c.status for c in checks}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else OK


def render_text(checks: list[Check]) -> str:
    rows = [[c.status.upper(), c.id, c.summary] for c in checks]
    lines = [table(rows, ["STATUS", "CHECK", "SUMMARY"])]
    hints = [f"  {c.id}: {c.hint}" for c in checks if c.status in (WARN, FAIL) and c.hint]
    if hints:
        lines += ["", "what to do:", *hints]
    lines += ["", f"overall: {overall(checks)}"]
    return "\n".join(lines)
