"""Long-running mode (DaemonSet / systemd): converge, then keep the node converged.

The loop converges at start, tells systemd it is ready, then re-converges every
`interval` seconds (drift: a package upgrade or k3s rewriting the config, labels
wiped by a kubelet restart). Failures back off exponentially up to the interval.
SIGTERM stops the loop; the node is uninstalled only when `should_uninstall`
says so (the DaemonSet no longer selects the node), never on a rolling update.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import structlog

from nodeagent import error_handler, sdnotify
from nodeagent.endpoint import BoundedHTTPServer
from nodeagent.errors import NodeagentError, UsageError
from nodeagent.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from nodeagent.metrics import Metrics

log = structlog.get_logger(__name__)

FIRST_BACKOFF = 5.0


@dataclass
class ConvergeOutcome:
    changed: bool = False
    restarted: bool = False
    rolled_back: bool = False


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"invalid listen address {listen!r}", "use HOST:PORT, e.g. 127.0.0.1:9101 (port 0 picks one)")
    return host.strip("[]") or "0.0.0.0", int(port)


class Agent:
    """The converge loop plus its health/metrics endpoint."""

    def __init__(
        self,
        converge: Callable[[], ConvergeOutcome],
        *,
        interval: float,
        listen: str,
        should_uninstall: Callable[[], bool] = lambda: False,
        uninstall: Callable[[], None] = lambda: None,
    ):
        self.converge_fn = converge
        self.interval = interval
        self.listen = listen
        self.should_uninstall = should_uninstall
        self.uninstall = uninstall
        self.metrics = Metrics()
        self.stop_event = threading.Event()
        self.ready = False
        self.converged_once = False
        self.last_error: str | None = None
        self.last_failure: NodeagentError | None = None  # `agent --once` reports it as error/hint
        self.heartbeat = time.monotonic()
        self.server: BoundedHTTPServer | None = None

    # --- HTTP -----------------------------------------------------------------
    def route(self, path: str) -> tuple[int, str, str]:
        """(status, body, content type) for a GET of `path`."""
        if path == "/healthz":
            # alive = the loop has ticked within a few intervals (not wedged)
            stale = time.monotonic() - self.heartbeat > max(3 * self.interval, 60)
            return (503, "stale\n", "text/plain") if stale else (200, "ok\n", "text/plain")
        if path == "/readyz":
            if self.ready:
                return 200, "ready\n", "text/plain"
            return 503, f"not ready: {self.last_error or 'converging'}\n", "text/plain"
        if path == "/metrics":
            return 200, self.metrics.render(), METRICS_CONTENT_TYPE
        return 404, "not found\n", "text/plain"

    def start_server(self) -> tuple[str, int]:
        """Start serving (once); returns the bound address (port 0 picks a free port)."""
        if self.server is not None:
            return self.server.server_address[:2]
        host, port = parse_listen(self.listen)
        try:
            self.server = BoundedHTTPServer((host, port), self.route)
        except OSError as exc:
            raise NodeagentError(f"cannot listen on {self.listen}: {exc.strerror}", "choose another --listen address") from exc
        threading.Thread(target=self.server.serve_forever, name="health", daemon=True).start()
        bound = self.server.server_address[:2]
        log.info("health endpoint listening", address=f"{bound[0]}:{bound[1]}")
        return bound

    # --- loop -----------------------------------------------------------------
    def converge_once(self) -> bool:
        started = time.monotonic()
        outcome_label = "failed"
        try:
            outcome = self.converge_fn()
        except NodeagentError as exc:
            self.last_error = exc.message
            self.last_failure = exc  # exit code 3 when another nodeagent holds the lock
            self._failed()
            if getattr(exc, "rolled_back", False):
                outcome_label = "rolled_back"
                self.metrics.inc("nodeagent_rollbacks_total")
            self.metrics.set("nodeagent_rollout_halted", 1 if getattr(exc, "rollout_halted", False) else 0)
            log.error("converge failed", error=exc.message, hint=exc.hint)
            return False
        except Exception as exc:  # a bug must not kill the agent; it is logged and retried
            self.last_error = f"unexpected {type(exc).__name__}: {exc}"
            self.last_failure = NodeagentError(
                self.last_error, "this is a bug in nodeagent; run again with -v for the traceback and report it")
            self._failed()
            log.exception("converge crashed")
            return False
        else:
            outcome_label = "rolled_back" if outcome.rolled_back else ("changed" if outcome.changed else "unchanged")
        finally:
            self.heartbeat = time.monotonic()
            took = time.monotonic() - started
            self.metrics.converge_finished(outcome_label, took)
            self.metrics.set("nodeagent_last_converge_duration_seconds", round(took, 6))
            self.metrics.set("nodeagent_last_converge_timestamp_seconds", round(time.time(), 3))
        if outcome.changed:
            self.metrics.inc("nodeagent_installs_total")
            if self.converged_once:
                self.metrics.inc("nodeagent_drift_repairs_total")
                log.warning("drift repaired")
        if outcome.restarted:
            self.metrics.inc("nodeagent_containerd_restarts_total")
        if outcome.rolled_back:
            self.metrics.inc("nodeagent_rollbacks_total")
        self.converged_once = True
        self.ready = True
        self.last_error = None
        self.metrics.set("nodeagent_ready", 1)
        self.metrics.set("nodeagent_rollout_halted", 0)
        return True

    def _failed(self) -> None:
        self.ready = False
        self.metrics.inc("nodeagent_converge_failures_total")
        self.metrics.set("nodeagent_ready", 0)

    def _watchdog(self, every: float) -> None:
        while not self.stop_event.wait(every):
            # only ping while the loop is alive: a wedged loop lets systemd restart us
            if time.monotonic() - self.heartbeat <= max(3 * self.interval, 60):
                sdnotify.notify("WATCHDOG=1")

    def request_stop(self, *_args) -> None:
        self.stop_event.set()

    def run(self, once: bool = False) -> int:
        if not once:
            self.start_server()
            error_handler.call_on_stop_signals(self.request_stop)
        ok = self.converge_once()
        if once:
            return 0 if ok else (self.last_failure.exit_code if self.last_failure else 2)
        sdnotify.notify(f"READY=1\nSTATUS={'converged' if ok else 'converge failed, retrying'}")
        every = sdnotify.watchdog_interval()
        if every:
            threading.Thread(target=self._watchdog, args=(every,), name="watchdog", daemon=True).start()
        backoff = FIRST_BACKOFF
        while True:
            wait = self.interval if ok else min(backoff, self.interval)
            if self.stop_event.wait(wait):
                break
            self.heartbeat = time.monotonic()
            ok = self.converge_once()
            backoff = FIRST_BACKOFF if ok else min(backoff * 2, self.interval)
            sdnotify.notify(f"STATUS={'converged' if ok else 'converge failed: ' + (self.last_error or '')}")
        sdnotify.notify("STOPPING=1")
        log.info("stopping")
        try:
            if self.should_uninstall():
                log.warning("node no longer selected: uninstalling")
                self.uninstall()
        except NodeagentError as exc:
            log.error("uninstall on stop failed", error=exc.message, hint=exc.hint)
        finally:
            if self.server:
                self.server.shutdown()
                self.server.server_close()
        return 0
