"""Command line: parse, build Settings, dispatch to a command, turn errors into two lines.

Global options are accepted before or after the command (kubectl style). Command
implementations are imported lazily so `nodeagent version` stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

import structlog

from nodeagent import cli_help, error_handler, errors, logsetup, settings as settings_mod
from nodeagent.errors import EXIT_USAGE, NodeagentError, UsageError
from nodeagent.output import emit

# command -> "module:function"; the function takes (Settings, argparse.Namespace) -> Result
COMMANDS: dict[str, tuple[str, str]] = {
    "detect": ("nodeagent.commands.detect:run", "host facts: CPU, KVM, nesting, containerd, flavor, eligibility"),
    "plan": ("nodeagent.commands.converge:plan", "show what install would do (diffs, artifacts, restart)"),
    "install": ("nodeagent.commands.converge:install", "install runtimes and register their containerd handlers"),
    "uninstall": ("nodeagent.commands.converge:uninstall", "remove what nodeagent installed; restore edited files"),
    "doctor": ("nodeagent.commands.doctor:run", "checks with ok/warn/fail and a hint each"),
    "verify": ("nodeagent.commands.verify:run", "start a sandbox per runtime and compare its kernel with the host's"),
    "labels": ("nodeagent.commands.kube:labels", "print (or --apply) the node labels this node should carry"),
    "runtimeclasses": ("nodeagent.commands.kube:runtimeclasses", "print (or --apply) the RuntimeClass manifests"),
    "bundle": ("nodeagent.commands.bundle:run", "download artifacts + digests into an offline mirror"),
    "agent": ("nodeagent.commands.agent:run", "long-running mode: converge, watch for drift, serve health/metrics"),
    "rollout": ("nodeagent.commands.rollout:run", "status of the fleet's rollout, or resume one that halted itself"),
    "version": ("nodeagent.commands.version:run", "version of nodeagent and of the artifacts it would install"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that exits 64 with the error/hint lines instead of 2 and a usage dump."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message, f"see `{self.prog} --help`")


PINS_HELP = "file of `<sha256|sha512>  <mirror path>` digests that win over the mirror's checksum files"


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    g = parser.add_argument_group("global options")
    g.add_argument("--root", default=d, help="the host's root filesystem (default /)")
    g.add_argument("--config", default=d, help="nodeagent's own settings file (TOML)")
    g.add_argument("-o", "--output", default=d, choices=("text", "json"), help="result format")
    g.add_argument("--log-format", dest="log_format", default=d, choices=("auto", "json", "console"))
    g.add_argument("-v", "--verbose", dest="verbose", action="count", default=argparse.SUPPRESS if suppress else 0)
    g.add_argument("-q", "--quiet", dest="quiet", action="count", default=argparse.SUPPRESS if suppress else 0)
    g.add_argument("--kubeconfig", default=d)
    g.add_argument("--node-name", dest="node_name", default=d)


def _install_options(p: argparse.ArgumentParser, *, dry_run: bool = True) -> None:
    p.add_argument("--runtime", choices=settings_mod.CHOICES["runtime"], default=argparse.SUPPRESS)
    p.add_argument("--mirror", default=argparse.SUPPRESS, help="http(s)://, file:// or a directory")
    p.add_argument("--restart", choices=("auto", "systemd", "none"), default=argparse.SUPPRESS)
    p.add_argument("--containerd-config", dest="containerd_config", default=argparse.SUPPRESS)
    p.add_argument("--containerd-socket", dest="containerd_socket", default=argparse.SUPPRESS)
    p.add_argument("--gvisor-version", dest="gvisor_version", default=argparse.SUPPRESS)
    p.add_argument("--kata-version", dest="kata_version", default=argparse.SUPPRESS)
    p.add_argument("--kata-sha256", dest="kata_sha256", default=argparse.SUPPRESS)
    p.add_argument("--pins", default=argparse.SUPPRESS, help=PINS_HELP)
    p.add_argument("--kata-release-listing", dest="kata_release_listing", default=argparse.SUPPRESS)
    p.add_argument("--kata-shims", dest="kata_shims", default=argparse.SUPPRESS, metavar="LIST")
    p.add_argument("--skip-eligibility", dest="skip_eligibility", action="store_true", default=argparse.SUPPRESS)
    p.add_argument("--force", action="store_true", default=argparse.SUPPRESS)
    p.add_argument("--health-timeout", dest="health_timeout", type=float, default=argparse.SUPPRESS)
    p.add_argument("--allow-control-plane-restart", dest="allow_control_plane_restart", action="store_true",
                   default=argparse.SUPPRESS)
    p.add_argument("--gvisor-platform", dest="gvisor_platform", choices=settings_mod.CHOICES["gvisor_platform"][1:],
                   default=argparse.SUPPRESS)
    p.add_argument("--gvisor-debug-log", dest="gvisor_debug_log", metavar="PATH", default=argparse.SUPPRESS)
    p.add_argument("--gvisor-net-raw", dest="gvisor_net_raw", action="store_true", default=argparse.SUPPRESS)
    if dry_run:
        p.add_argument("--dry-run", dest="dry_run", action="store_true", default=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nodeagent", description="Make this node able to run sandboxed pods (gVisor, Kata).",
                     epilog=cli_help.EPILOG, formatter_class=cli_help.TopLevelFormatter)
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers = {}
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _global_options(p, suppress=True)
        subparsers[name] = p
    _install_options(subparsers["plan"], dry_run=False)
    _install_options(subparsers["install"])
    u = subparsers["uninstall"]
    u.add_argument("--runtime", choices=settings_mod.CHOICES["runtime"], default=argparse.SUPPRESS)
    u.add_argument("--restart", choices=("auto", "systemd", "none"), default=argparse.SUPPRESS)
    u.add_argument("--containerd-config", dest="containerd_config", default=argparse.SUPPRESS)
    u.add_argument("--containerd-socket", dest="containerd_socket", default=argparse.SUPPRESS)
    u.add_argument("--force", action="store_true", default=argparse.SUPPRESS)
    u.add_argument("--health-timeout", dest="health_timeout", type=float, default=argparse.SUPPRESS)
    subparsers["doctor"].add_argument("--containerd-config", dest="containerd_config", default=argparse.SUPPRESS)
    subparsers["doctor"].add_argument("--containerd-socket", dest="containerd_socket", default=argparse.SUPPRESS)
    subparsers["detect"].add_argument("--containerd-config", dest="containerd_config", default=argparse.SUPPRESS)
    v = subparsers["verify"]
    v.add_argument("--runtime", choices=settings_mod.CHOICES["runtime"], default=argparse.SUPPRESS)
    v.add_argument("--containerd-socket", dest="containerd_socket", default=argparse.SUPPRESS)
    v.add_argument("--kata-shims", dest="kata_shims", default=argparse.SUPPRESS, metavar="LIST")
    v.add_argument("--image", default=None, help="image for CRI-based checks (default: skip CRI pods)")
    v.add_argument("--measure", nargs="?", const=3, type=int, default=None, metavar="N")
    v.add_argument("--out", default=None, metavar="FILE")
    for name in ("labels", "runtimeclasses"):
        subparsers[name].add_argument("--apply", action="store_true", default=False)
    for name in ("labels", "runtimeclasses", "doctor"):
        subparsers[name].add_argument("--kata-shims", dest="kata_shims", default=argparse.SUPPRESS, metavar="LIST")
    subparsers["runtimeclasses"].add_argument("--kata-shim-overheads", dest="kata_shim_overheads",
                                              default=argparse.SUPPRESS, metavar="LIST")
    subparsers["runtimeclasses"].add_argument("--overhead-from", dest="overhead_from", default=argparse.SUPPRESS,
                                              metavar="FILE")
    b = subparsers["bundle"]
    b.add_argument("--runtime", choices=settings_mod.CHOICES["runtime"], default=argparse.SUPPRESS)
    b.add_argument("--arch", action="append", default=None, help="amd64|arm64|... (repeatable; default: this host's)")
    b.add_argument("--mirror", default=argparse.SUPPRESS, help="fetch from this mirror instead of upstream")
    b.add_argument("--gvisor-version", dest="gvisor_version", default=argparse.SUPPRESS)
    b.add_argument("--kata-version", dest="kata_version", default=argparse.SUPPRESS)
    b.add_argument("--kata-sha256", dest="kata_sha256", default=argparse.SUPPRESS)
    b.add_argument("--pins", default=argparse.SUPPRESS, help=PINS_HELP)
    b.add_argument("--kata-release-listing", dest="kata_release_listing", default=argparse.SUPPRESS)
    b.add_argument("dir", metavar="DIR")
    a = subparsers["agent"]
    _install_options(a, dry_run=False)
    a.add_argument("--interval", type=float, default=argparse.SUPPRESS)
    a.add_argument("--listen", default=argparse.SUPPRESS)
    a.add_argument("--once", action="store_true", default=False, help="converge once and exit")
    a.add_argument("--startup-taint", dest="startup_taint", default=argparse.SUPPRESS)
    a.add_argument("--rollout-max-failures", dest="rollout_max_failures", type=int, default=argparse.SUPPRESS)
    r = subparsers["rollout"]
    r.add_argument("action", choices=("status", "resume"))
    r.add_argument("--namespace", default=None)
    return cli_help.fill_help(parser)


def _settings_from(ns: argparse.Namespace) -> settings_mod.Settings:
    flags = {k: v for k, v in vars(ns).items() if k in settings_mod.FIELD_NAMES}
    flags["verbosity"] = (getattr(ns, "verbose", 0) or 0) - (getattr(ns, "quiet", 0) or 0)
    if flags["verbosity"] == 0:
        flags.pop("verbosity")
    return settings_mod.load(flags)


def _load(target: str):
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verbose = "-v" in argv or "--verbose" in argv or any(a.startswith("-vv") for a in argv)
    try:
        ns = build_parser().parse_args(argv)
        if not ns.command:
            raise UsageError("no command given", "run `nodeagent --help` to list commands, e.g. `nodeagent doctor`")
        settings = _settings_from(ns)
        verbose = settings.verbosity > 0
        logsetup.configure(settings.log_format, settings.verbosity)
        error_handler.interrupt_on_sigterm()  # `finally:` blocks and rollbacks run on SIGTERM
        func = _load(COMMANDS[ns.command][0])
        result = func(settings, ns)
        emit(result, settings.output)
        return result.exit_code
    except NodeagentError as exc:
        if verbose:
            traceback.print_exc(file=sys.stderr)
        sys.stderr.write(f"error: {exc.message}\nhint: {exc.hint}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\nhint: run the same command again; it resumes safely\n")
        return 130
    except SystemExit as exc:  # argparse --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: keep the promise of two lines, tracebacks only at -v
        from nodeagent.artifacts.sources import redact_text  # a URL in the message may carry credentials

        if verbose:
            traceback.print_exc(file=sys.stderr)
        else:
            structlog.get_logger("nodeagent").error("unexpected error", exc_info=False, error=redact_text(repr(exc)))
        sys.stderr.write(
            f"error: unexpected {type(exc).__name__}: {redact_text(str(exc))}\n"
            "hint: this is a bug in nodeagent; run again with -v for the traceback and report it\n"
        )
        return errors.EXIT_FAIL


if __name__ == "__main__":
    raise SystemExit(main())
