"""kubeconfig `exec` credential plugins: EKS `aws eks get-token`, GKE `gke-gcloud-auth-plugin`, AKS `kubelogin`.

The plugin is run the way kubectl runs it (client-go's plugin/pkg/client/auth/exec, the
`client.authentication.k8s.io` ExecCredential API): the kubeconfig's command and args, its `env`
merged onto ours, and `KUBERNETES_EXEC_INFO` holding an ExecCredential with `spec.interactive`
false (nodeagent never gives a plugin a terminal) and `spec.cluster` only when the kubeconfig
sets `provideClusterInfo`. Its stdout must be an ExecCredential of the same apiVersion whose
status holds a token or a client certificate and key.

The credential is kept in this process's memory until its `expirationTimestamp` (a little
before: a token that expires in flight is a 401) and fetched again after a 401. It is never
written to disk: the plugins that need a cache keep their own in the user's home (kubelogin,
gke-gcloud-auth-plugin), a copy under /var/lib/nodeagent would outlive the process in a
root-owned directory an admin at a laptop cannot write anyway, and every nodeagent command is
one short process (the agent runs each round in a child), so a file cache would save one
plugin run per command at the price of a bearer token on disk. Like client-go, nothing is
cached across processes.

The plugin runs as the invoking user with exactly the kubeconfig's command: whoever can edit
the kubeconfig can already run anything as that user. Its stdout (the token) is never logged or
quoted in an error; its stderr's last line is, to say why it failed.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from nodeagent.errors import KubeError

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"
API_VERSIONS = (V1, V1BETA1)
# client-go reads a cluster's per-plugin settings from this extension when provideClusterInfo is on
CLUSTER_EXTENSION = "client.authentication.k8s.io/exec"
EXEC_TIMEOUT = 120.0  # a login that needs a browser must be done before (nodeagent is not interactive)
EXPIRY_SKEW = 10.0
_FIX_HINT = "fix the user's `exec` section of the kubeconfig (regenerate it with your cluster's tooling)"


@dataclass(frozen=True)
class ExecConfig:
    """A kubeconfig user's `exec` section, checked."""

    command: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    api_version: str
    user: str  # the kubeconfig user's name, for messages
    install_hint: str | None = None
    cluster: dict[str, Any] | None = None  # spec.cluster, only with provideClusterInfo


@dataclass
class ExecCredential:
    token: str | None
    cert_pem: str | None
    key_pem: str | None
    expires: float | None  # Unix time; None: valid for the life of the process
    files: list[str] = field(default_factory=list)  # private copies of the cert and key for requests

    @property
    def client_cert(self) -> tuple[str, str] | None:
        return (self.files[0], self.files[1]) if len(self.files) == 2 else None


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise KubeError(f"kubeconfig exec {what} must be a list of strings", _FIX_HINT)
    return tuple(value)


def _env(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
            isinstance(e, dict) and isinstance(e.get("name"), str) and e["name"] and isinstance(e.get("value", ""), str)
            for e in value):
        raise KubeError("kubeconfig exec env must be a list of {name, value} string pairs", _FIX_HINT)
    return tuple((e["name"], e.get("value", "")) for e in value)


def _cluster_info(cluster: dict[str, Any], ca_pem: bytes | None) -> dict[str, Any]:
    """spec.cluster as client-go fills it (clientauthentication Cluster; empty fields left out)."""
    info: dict[str, Any] = {"server": cluster.get("server")}
    for key in ("tls-server-name", "proxy-url", "disable-compression"):
        if cluster.get(key):
            info[key] = cluster[key]
    if ca_pem:
        info["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    for ext in cluster.get("extensions") or []:
        if isinstance(ext, dict) and ext.get("name") == CLUSTER_EXTENSION:
            info["config"] = ext.get("extension")
    return info


def parse_exec_config(entry: Any, *, user: str, kubeconfig: Path, cluster: dict[str, Any],
                      ca_pem: bytes | None) -> ExecConfig:
    """Check a user's `exec` section; a relative command with a `/` is relative to the kubeconfig (as kubectl)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("command"), str) or not entry["command"]:
        raise KubeError(f"kubeconfig user {user!r}: exec needs a command", _FIX_HINT)
    version = entry.get("apiVersion")
    if version not in API_VERSIONS:
        removed = " (v1alpha1 was removed in Kubernetes 1.24)" if str(version).endswith("/v1alpha1") else ""
        raise KubeError(f"kubeconfig user {user!r}: exec apiVersion {version!r} is not supported{removed}",
                        f"use {V1} (or {V1BETA1}); update the plugin and regenerate the kubeconfig")
    if entry.get("interactiveMode") == "Always":
        raise KubeError(f"kubeconfig user {user!r}: exec interactiveMode Always needs a terminal, "
                        "and nodeagent runs credential plugins without one",
                        "log in with the plugin first, then set interactiveMode: IfAvailable (or Never)")
    command = os.path.expanduser(entry["command"])
    if "/" in command and not os.path.isabs(command):
        command = str((kubeconfig.parent / command).resolve())
    hint = entry.get("installHint")
    return ExecConfig(
        command=command, args=_strings(entry.get("args"), "args"), env=_env(entry.get("env")),
        api_version=version, user=user,
        install_hint=" ".join(str(hint).split()) if hint else None,
        cluster=_cluster_info(cluster, ca_pem) if entry.get("provideClusterInfo") else None,
    )


def exec_info(config: ExecConfig) -> str:
    """The KUBERNETES_EXEC_INFO value: what the plugin is told about this call."""
    spec: dict[str, Any] = {"interactive": False}
    if config.cluster is not None:
        spec["cluster"] = config.cluster
    return json.dumps({"apiVersion": config.api_version, "kind": "ExecCredential", "spec": spec})


def _parse_time(text: Any, name: str) -> float:
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise KubeError(f"the credential plugin {name} returned an expirationTimestamp that is not RFC 3339",
                        "update the credential plugin") from None


def parse_output(stdout: bytes, config: ExecConfig) -> ExecCredential:
    """The plugin's ExecCredential, checked. Messages never quote stdout: it holds the secret."""
    name = os.path.basename(config.command)
    bad = "update the credential plugin, or check it is the one your cluster's docs name"
    try:
        doc = json.loads(stdout)
    except ValueError:
        raise KubeError(f"the credential plugin {name} printed something that is not JSON "
                        "(an ExecCredential was expected)", bad) from None
    if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
        raise KubeError(f"the credential plugin {name} printed JSON that is not an ExecCredential", bad)
    if doc.get("apiVersion") != config.api_version:
        raise KubeError(f"the credential plugin {name} answered with apiVersion {doc.get('apiVersion')!r}, "
                        f"but the kubeconfig asks for {config.api_version!r}",
                        "set the kubeconfig's exec apiVersion to one the plugin speaks, or update the plugin")
    status = doc.get("status") if isinstance(doc.get("status"), dict) else {}
    token = status.get("token") if isinstance(status.get("token"), str) else None
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    if bool(cert) != bool(key) or (cert and not (isinstance(cert, str) and isinstance(key, str))):
        raise KubeError(f"the credential plugin {name} returned a client certificate without its key (or the reverse)", bad)
    if not token and not cert:
        raise KubeError(f"the credential plugin {name} returned neither a token nor a client certificate", bad)
    expiry = status.get("expirationTimestamp")
    return ExecCredential(token=token or None, cert_pem=cert or None, key_pem=key or None,
                          expires=_parse_time(expiry, name) if expiry else None)


def _private_copy(data: str, suffix: str) -> str:
    fd, path = tempfile.mkstemp(prefix="nodeagent-kube-", suffix=suffix)  # 0600
    with os.fdopen(fd, "w") as fh:
        fh.write(data)
    return path


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass
    paths.clear()


def _why(stderr: bytes) -> str:
    """The plugin's reason in one line: its last line that mentions an error, else its last line
    with words; the end of a long line (gke-gcloud-auth-plugin puts gcloud's reason last)."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines()
             if any(c.isalpha() for c in line)]
    line = next((l for l in reversed(lines) if "error" in l.lower()), lines[-1] if lines else "")
    return line if len(line) <= 200 else "..." + line[-200:]


class ExecPlugin:
    """Runs one kubeconfig user's credential plugin and keeps its answer until it expires."""

    def __init__(self, config: ExecConfig, *, clock: Callable[[], float] = time.time,
                 timeout: float = EXEC_TIMEOUT):
        self.config = config
        self.clock = clock
        self.timeout = timeout
        self.runs = 0
        self._cached: ExecCredential | None = None
        self._lock = threading.Lock()
        self._files: list[str] = []  # the cached cert/key copies, removed even if close() is forgotten
        self._finalizer = weakref.finalize(self, _unlink_all, self._files)

    def credential(self) -> ExecCredential:
        """The cached credential, or a fresh one when there is none or it (nearly) expired."""
        with self._lock:
            cached = self._cached
            if cached is None or (cached.expires is not None and cached.expires - EXPIRY_SKEW <= self.clock()):
                self._replace(self._run())
            assert self._cached is not None
            return self._cached

    def cached_token(self) -> str | None:
        cached = self._cached
        return cached.token if cached else None

    def invalidate(self) -> None:
        """Forget the credential (the API server refused it): the next request runs the plugin again."""
        with self._lock:
            self._replace(None)

    def close(self) -> None:
        self.invalidate()

    def _replace(self, new: ExecCredential | None) -> None:
        self._cached = new
        _unlink_all(self._files)
        self._files.extend(new.files if new else [])

    def _executable(self) -> str:
        command = self.config.command
        found = command if "/" in command else shutil.which(command)
        if found and os.path.isfile(found) and os.access(found, os.X_OK):
            return found
        where = "does not exist or is not executable" if "/" in command else "is not on PATH"
        raise KubeError(f"the kubeconfig user {self.config.user!r} needs the credential plugin {command!r}, "
                        f"which {where}",
                        self.config.install_hint or "install the plugin your cluster's docs name, or use a "
                                                    "kubeconfig with a token or client certificate")

    def _run(self) -> ExecCredential:
        name = os.path.basename(self.config.command)
        env = dict(os.environ)
        env.update(self.config.env)
        env["KUBERNETES_EXEC_INFO"] = exec_info(self.config)
        argv = [self._executable(), *self.config.args]
        self.runs += 1
        try:
            proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise KubeError(f"the credential plugin {name} did not answer within {self.timeout:.0f} s",
                            "run the plugin by hand to see what it waits for (a login?), then try again") from None
        except OSError as exc:
            raise KubeError(f"cannot run the credential plugin {name}: {exc.strerror}",
                            "check the plugin is an executable for this machine") from None
        if proc.returncode != 0:
            why = _why(proc.stderr)
            raise KubeError(f"the credential plugin {name} exited with code {proc.returncode}"
                            + (f": {why}" if why else ""),
                            f"run `{name}` by hand to see why (often an expired cloud login), then try again")
        cred = parse_output(proc.stdout, self.config)
        if cred.cert_pem and cred.key_pem:
            cred.files = [_private_copy(cred.cert_pem, ".crt"), _private_copy(cred.key_pem, ".key")]
        return cred
