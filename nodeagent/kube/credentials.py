"""Where the API server is and how to prove who we are: in-cluster service account or kubeconfig.

The in-cluster token is re-read from its file on every request (kubelet rotates projected
tokens; a cached one expires after an hour). Kubeconfig `*-data` fields are written to private
0600 temp files because requests only takes paths; `close()` removes them.
TLS is never optional: `insecure-skip-tls-verify` is refused rather than honoured.
A user with an `exec` credential plugin (EKS, GKE, AKS) gets its token or certificate from
kube/exec_credentials.py, which runs the plugin when a request first needs it.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from nodeagent.errors import KubeError
from nodeagent.kube.exec_credentials import ExecPlugin, parse_exec_config

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

_KUBECONFIG_HINT = "pass --kubeconfig FILE (or set KUBECONFIG), or run inside a pod with a service account"


def _remove_files(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


@dataclass
class Credentials:
    """Everything a request needs: server URL, the CA to trust, and a token or client cert."""

    server: str
    ca_file: str | None = None
    token: str | None = None
    token_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    source: str = ""
    namespace: str | None = None  # the pod's namespace (in-cluster) or the context's
    exec_plugin: ExecPlugin | None = None  # a kubeconfig `exec` credential plugin
    _temp_files: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        # Remove the private copies of *-data even if close() is forgotten.
        self._finalizer = weakref.finalize(self, _remove_files, self._temp_files)

    def bearer_token(self) -> str | None:
        """The token to send now; a token file is read afresh every time (rotation), an exec
        plugin's token until it expires."""
        if self.exec_plugin:
            return self.exec_plugin.credential().token
        if self.token_file:
            try:
                return Path(self.token_file).read_text().strip() or None
            except OSError as exc:
                raise KubeError(
                    f"cannot read the token file {self.token_file}: {exc.strerror}",
                    "check the service account token is mounted (automountServiceAccountToken)",
                ) from None
        return self.token

    @property
    def client_cert(self) -> tuple[str, str] | None:
        if self.exec_plugin:
            return self.exec_plugin.credential().client_cert
        return (self.cert_file, self.key_file) if self.cert_file and self.key_file else None

    def request_auth(self) -> tuple[str | None, tuple[str, str] | None]:
        """(bearer token, client cert) for one request: an exec plugin is asked once for both."""
        if self.exec_plugin:
            cred = self.exec_plugin.credential()
            return cred.token, cred.client_cert
        return self.bearer_token(), self.client_cert

    def secrets(self) -> list[str]:
        """Strings that must never appear in a log line or an error message."""
        found = [self.token] if self.token else []
        if self.exec_plugin and self.exec_plugin.cached_token():
            found.append(self.exec_plugin.cached_token())
        if self.token_file:
            try:
                found.append(Path(self.token_file).read_text().strip())
            except OSError:
                pass
        return [s for s in found if s]

    def renew(self) -> bool:
        """After a 401: drop a credential that can be fetched again; True if a retry may succeed."""
        if self.exec_plugin:
            self.exec_plugin.invalidate()
            return True
        return False

    def close(self) -> None:
        if self.exec_plugin:
            self.exec_plugin.close()
        self._finalizer()


def _private_file(data: bytes, creds_files: list[str], suffix: str) -> str:
    fd, path = tempfile.mkstemp(prefix="nodeagent-kube-", suffix=suffix)
    creds_files.append(path)
    with os.fdopen(fd, "wb") as fh:  # mkstemp already creates it 0600
        fh.write(data)
    return path


def in_cluster(environ: Mapping[str, str] | None = None, sa_dir: str = SERVICE_ACCOUNT_DIR) -> Credentials | None:
    """Credentials of the pod's service account, or None when not running in a pod."""
    environ = os.environ if environ is None else environ
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    token_file = os.path.join(sa_dir, "token")
    ca_file = os.path.join(sa_dir, "ca.crt")
    for path in (token_file, ca_file):
        if not os.path.exists(path):
            raise KubeError(
                f"running in a pod but {path} is missing",
                "mount the service account token (automountServiceAccountToken: true) or pass --kubeconfig",
            )
    if ":" in host and not host.startswith("["):  # IPv6 service address
        host = f"[{host}]"
    namespace = None
    try:
        namespace = Path(sa_dir, "namespace").read_text().strip() or None
    except OSError:
        pass
    return Credentials(
        server=f"https://{host}:{port}", ca_file=ca_file, token_file=token_file,
        source="in-cluster service account", namespace=namespace,
    )


def _read_kubeconfigs(spec: str) -> list[tuple[Path, dict]]:
    """Parse each file of a KUBECONFIG-style list (missing entries of a list are skipped, as kubectl does)."""
    paths = [p for p in spec.split(os.pathsep) if p]
    docs = []
    for raw in paths:
        path = Path(raw).expanduser()
        try:
            text = path.read_text()
        except FileNotFoundError:
            if len(paths) == 1:
                raise KubeError(f"kubeconfig {path} does not exist", _KUBECONFIG_HINT) from None
            continue
        except OSError as exc:
            raise KubeError(f"cannot read kubeconfig {path}: {exc.strerror}", "check the file's permissions") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise KubeError(f"kubeconfig {path} is not valid YAML: {str(exc).splitlines()[0]}",
                            "fix the file, e.g. regenerate it with your cluster's tooling") from None
        if not isinstance(data, dict):
            raise KubeError(f"kubeconfig {path} is not a mapping", "a kubeconfig is a YAML object with clusters, users, contexts")
        docs.append((path, data))
    if not docs:
        raise KubeError(f"none of the kubeconfig files {spec!r} exist", _KUBECONFIG_HINT)
    return docs


def _named(docs: list[tuple[Path, dict]], section: str, key: str, name: str) -> tuple[Path, dict] | None:
    """First entry called `name` in `section` across the files (the first file wins, like kubectl)."""
    for path, data in docs:
        for entry in data.get(section) or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                return path, entry.get(key) or {}
    return None


def _data_or_file(entry: dict, base: Path, name: str, files: list[str], suffix: str) -> str | None:
    data = entry.get(f"{name}-data")
    if data:
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise KubeError(f"kubeconfig field {name}-data is not valid base64",
                            f"re-encode it with `base64 -w0`, or use {name}: PATH") from None
        return _private_file(raw, files, suffix)
    path = entry.get(name)
    if path:
        full = (base.parent / os.path.expanduser(str(path))).resolve()
        if not full.is_file():
            raise KubeError(f"kubeconfig field {name} points at {full}, which does not exist",
                            "fix the path (relative paths are relative to the kubeconfig file)")
        return str(full)
    return None


def from_kubeconfig(spec: str, context: str | None = None) -> Credentials:
    """Credentials of the current (or given) context of a kubeconfig file list."""
    docs = _read_kubeconfigs(spec)
    context = context or next((d.get("current-context") for _, d in docs if d.get("current-context")), None)
    if not context:
        raise KubeError(f"kubeconfig {spec} has no current-context", "run `kubectl config use-context NAME`")
    ctx = _named(docs, "contexts", "context", context)
    if ctx is None:
        raise KubeError(f"kubeconfig context {context!r} is not defined", "check `kubectl config get-contexts`")
    ctx_entry = ctx[1]
    cluster = _named(docs, "clusters", "cluster", str(ctx_entry.get("cluster")))
    user = _named(docs, "users", "user", str(ctx_entry.get("user")))
    if cluster is None:
        raise KubeError(f"cluster {ctx_entry.get('cluster')!r} of context {context!r} is not defined", "fix the kubeconfig")
    cluster_path, c = cluster
    user_path, u = user if user is not None else (cluster_path, {})
    server = str(c.get("server") or "")
    if not server.startswith("https://"):
        raise KubeError(f"API server {server or '(none)'} is not an https:// URL",
                        "nodeagent only talks to the API server over verified TLS")
    if c.get("insecure-skip-tls-verify"):
        raise KubeError("the kubeconfig sets insecure-skip-tls-verify, which nodeagent refuses",
                        "put the cluster's CA in certificate-authority(-data) instead of skipping verification")
    if u.get("auth-provider"):  # kubectl itself dropped the gcp and azure providers in 1.26
        raise KubeError("kubeconfig user uses `auth-provider` credentials, which nodeagent does not support",
                        "regenerate the kubeconfig so it uses an exec plugin (gcloud container clusters "
                        "get-credentials; kubelogin convert-kubeconfig), or use a token or client certificate")
    if u.get("username"):
        raise KubeError("kubeconfig user uses `username` credentials, which nodeagent does not support",
                        "use a token, tokenFile, an exec plugin, or client-certificate/client-key for this user")
    files: list[str] = []
    try:
        ca = _data_or_file(c, cluster_path, "certificate-authority", files, ".crt")
        cert = _data_or_file(u, user_path, "client-certificate", files, ".crt")
        key = _data_or_file(u, user_path, "client-key", files, ".key")
    except KubeError:
        _remove_files(files)
        raise
    if bool(cert) != bool(key):
        _remove_files(files)
        raise KubeError("kubeconfig user has a client certificate without its key (or the reverse)",
                        "set both client-certificate(-data) and client-key(-data)")
    plugin = None
    if u.get("exec"):
        plugin = _exec_plugin(u, str(ctx_entry.get("user")), user_path, c, ca, files)
    token_file = u.get("tokenFile")
    if token_file:
        token_file = str((user_path.parent / os.path.expanduser(str(token_file))).resolve())
    creds = Credentials(
        server=server.rstrip("/"), ca_file=ca, token=u.get("token") or None, token_file=token_file,
        cert_file=cert, key_file=key, source=f"kubeconfig context {context}",
        namespace=ctx_entry.get("namespace"), exec_plugin=plugin,
    )
    creds._temp_files.extend(files)
    return creds


def _refuse_foreign_kubeconfig(path: Path) -> None:
    """As root, run no command named by a kubeconfig that someone else could have written (like
    ssh with its config): whoever can write it would get root on the next nodeagent run."""
    if os.geteuid() != 0:
        return  # the plugin runs as the invoking user, who can run anything as themself anyway
    st = path.stat()
    if st.st_uid != 0 or st.st_mode & 0o022:
        who = f"owned by uid {st.st_uid}" if st.st_uid != 0 else f"writable by others (mode {st.st_mode & 0o777:04o})"
        raise KubeError(f"kubeconfig {path} names a credential plugin to run as root, but is {who}",
                        f"make it root's and not group/world-writable (chown root {path}; chmod go-w {path}), "
                        "or run the command as the file's owner")


def _exec_plugin(u: dict, user: str, user_path: Path, cluster: dict, ca: str | None, files: list[str]) -> ExecPlugin:
    """The user's credential plugin; a user that also names a static token or cert is refused as ambiguous."""
    try:
        if any(u.get(k) for k in ("token", "tokenFile", "client-certificate", "client-certificate-data")):
            raise KubeError(f"kubeconfig user {user!r} has both an exec plugin and a static token or certificate",
                            "keep one of them in the user's entry")
        _refuse_foreign_kubeconfig(user_path)
        ca_pem = Path(ca).read_bytes() if ca else None
        return ExecPlugin(parse_exec_config(u["exec"], user=user, kubeconfig=user_path, cluster=cluster, ca_pem=ca_pem))
    except (KubeError, OSError) as exc:
        _remove_files(files)
        if isinstance(exc, KubeError):
            raise
        raise KubeError(f"cannot read the cluster CA {ca}: {exc.strerror}", "check the file's permissions") from None


def load_credentials(kubeconfig: str | None = None, *, environ: Mapping[str, str] | None = None,
                     sa_dir: str = SERVICE_ACCOUNT_DIR) -> Credentials:
    """Kubeconfig if one is named (flag, setting or KUBECONFIG), else the in-cluster service account."""
    environ = os.environ if environ is None else environ
    spec = kubeconfig or environ.get("KUBECONFIG")
    if spec:
        return from_kubeconfig(spec)
    creds = in_cluster(environ, sa_dir)
    if creds is None:
        raise KubeError("no Kubernetes credentials: no kubeconfig given and not running in a pod", _KUBECONFIG_HINT)
    return creds


def describe(creds: Credentials) -> dict[str, Any]:
    """A log-safe summary of the credentials (never the token)."""
    return {
        "server": creds.server, "source": creds.source,
        "auth": _auth_kind(creds),
    }


def _auth_kind(creds: Credentials) -> str:
    if creds.exec_plugin:  # not creds.client_cert: that would run the plugin just to describe it
        return f"exec plugin {os.path.basename(creds.exec_plugin.config.command)}"
    if creds.cert_file and creds.key_file:
        return "client-certificate"
    return "token-file" if creds.token_file else ("token" if creds.token else "none")
