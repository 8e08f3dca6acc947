"""A loopback HTTPS STAND-IN for the Kubernetes API server.

This is a stand-in, not Kubernetes: no kube-apiserver can be had on these machines (none in
Debian, PyPI or npm, no registry to pull one from). It enforces what the real server does for
the calls nodeagent makes, so the client is tested against real TLS, real HTTP and real
semantics rather than mocks:

- TLS with its own CA (generated here with the `openssl` CLI); a client trusting another CA fails;
- bearer-token auth (401 otherwise; `token_review` judges tokens minted elsewhere, e.g. by an exec
  credential plugin), and optionally client-certificate auth (CN = user);
- GET / LIST / POST (409 AlreadyExists, generateName) / PUT (409 Conflict on a stale
  resourceVersion; RuntimeClass `handler` immutable → 422) / DELETE / PATCH with
  `application/merge-patch+json` (RFC 7386) and `application/strategic-merge-patch+json`
  (maps merge, null deletes, `$patch: replace|delete` directives; lists replace as for fields
  without a patchStrategy); a no-op write keeps the resourceVersion; other patch types → 415;
- `application/json-patch+json` (RFC 6902: add, remove, replace, test; a failed `test` is a 422
  as on the real server);
- WATCH (`?watch=1`) as chunked JSON lines from a resourceVersion, `timeoutSeconds`, BOOKMARK
  events (`allowWatchBookmarks`), 410 Expired as an ERROR event for a resourceVersion older than
  the retained history (`compact()`), and `drop_watches()` to cut every open watch mid-stream;
- label key/value validation → 422 Invalid;
- fault injection (429 with Retry-After, 5xx) for the next N matching requests;
- request records, and for Leases: concurrent unexpired holders over time and any "steal"
  (a holder replaced while its lease was still valid);
- optionally validating admission on PUT/PATCH (`admission`, e.g. deploy/'s ValidatingAdmissionPolicy
  through tests/support/admission.py): a refusal is a 403 Forbidden in the API server's wording.
"""

from __future__ import annotations

import bisect
import copy
import datetime as dt
import json
import random
import re
import socket
import ssl
import string
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

# --- PKI ---------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@dataclass
class Pki:
    """A CA, a server cert for 127.0.0.1/localhost, a client cert, and an unrelated CA."""

    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path

    @classmethod
    def create(cls, directory: Path, client_cn: str = "system:node:node-a") -> "Pki":
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for ca in ("ca", "other-ca"):
            _openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2",
                     "-subj", f"/CN={ca}", "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
        (d / "server.ext").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n")
        (d / "client.ext").write_text("extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n"
                                      "keyUsage=critical,digitalSignature\n")
        for name, subj in (("server", "/CN=kube-apiserver-standin"), ("client", f"/O=system:nodes/CN={client_cn}")):
            _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj, cwd=d)
            _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                     "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)
        return cls(d, d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key",
                   d / "client.crt", d / "client.key", d / "other-ca.crt")


# --- semantics ---------------------------------------------------------------------------

_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _invalid_key(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"prefix part of {key!r} must be a DNS subdomain"
    if not name or len(name) > 63 or not _NAME.match(name):
        return f"name part of {key!r} must be alphanumerics, '-', '_' or '.', at most 63 characters"
    return None


def validate_metadata(obj: dict[str, Any]) -> list[str]:
    meta = obj.get("metadata") or {}
    problems = []
    for key, value in (meta.get("labels") or {}).items():
        problem = _invalid_key(key)
        if problem:
            problems.append(f"metadata.labels: {problem}")
        if not isinstance(value, str) or len(value) > 63 or not _NAME.match(value):
            problems.append(f"metadata.labels: value {value!r} of {key!r} is invalid")
    for key, value in (meta.get("annotations") or {}).items():
        problem = _invalid_key(key)
        if problem:
            problems.append(f"metadata.annotations: {problem}")
        if not isinstance(value, str):
            problems.append(f"metadata.annotations: value of {key!r} must be a string")
    return problems


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Kubernetes strategic merge for maps: like RFC 7386 plus `$patch: replace|delete` directives.

    Lists replace wholesale, which is what the real server does for fields that have no
    patchStrategy (labels/annotations are maps; nodeagent patches nothing else).
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    rest = {k: v for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: strategic_merge_patch(None, v) for k, v in rest.items() if v is not None}
    if directive is not None:
        raise ValueError(f"unknown patch directive {directive!r}")
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in rest.items():
        if value is None:
            result.pop(key, None)
            continue
        merged = strategic_merge_patch(result.get(key), value)
        if merged is None:
            result.pop(key, None)
        else:
            result[key] = merged
    return result


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _step(doc: Any, token: str) -> Any:
    if isinstance(doc, list):
        return doc[int(token)]
    return doc[token]


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 add/remove/replace/test; ValueError (the server's 422) when an op cannot apply."""
    if not isinstance(ops, list):
        raise ValueError("a JSON patch is a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        kind, tokens = op.get("op"), _pointer(op.get("path", ""))
        try:
            parent = doc
            for token in tokens[:-1]:
                parent = _step(parent, token)
            last = tokens[-1]
            if kind == "test":
                if _step(parent, last) != op.get("value"):
                    raise ValueError(f"testing value {op['path']} failed")
            elif kind == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            elif kind == "replace":
                _step(parent, last)  # must exist
                parent[int(last) if isinstance(parent, list) else last] = copy.deepcopy(op.get("value"))
            elif kind == "add":
                if isinstance(parent, list):
                    parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(op.get("value")))
                else:
                    parent[last] = copy.deepcopy(op.get("value"))
            else:
                raise ValueError(f"the stand-in does not serve JSON patch op {kind!r}")
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"{kind} {op.get('path')}: no such path ({exc!r})") from None
    return doc


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.timezone.utc).timestamp()
        except ValueError:
            pass
    return None


def lease_holder(lease: dict[str, Any] | None, now: float) -> str | None:
    """The holder of an unexpired lease, else None."""
    spec = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity")
    renewed = _parse_time(spec.get("renewTime")) or _parse_time(spec.get("acquireTime"))
    if not holder or renewed is None:
        return None
    return holder if renewed + int(spec.get("leaseDurationSeconds") or 0) >= now else None


# --- server ------------------------------------------------------------------------------

@dataclass
class Record:
    method: str
    path: str
    status: int
    user: str | None
    content_type: str | None
    watch: bool = False


@dataclass
class Fault:
    status: int
    remaining: int
    method: str | None = None
    path_contains: str | None = None
    retry_after: str | None = None


@dataclass
class WatchEvent:
    version: int
    collection: str
    type: str  # ADDED | MODIFIED | DELETED
    object: dict[str, Any]


@dataclass
class Store:
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # collection -> name -> obj
    version: int = 100


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.headers = code, reason, message, headers or {}


def split_path(path: str) -> tuple[str, str | None]:
    """API path -> (collection path, object name or None)."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if parts[:2] == ["api", "v1"]:
        head, rest = parts[:2], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        head, rest = parts[:3], parts[3:]
    else:
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
    if len(rest) >= 3 and rest[0] == "namespaces":
        head, rest = head + rest[:3], rest[3:]
        if not rest:
            return "/" + "/".join(head), None
        return "/" + "/".join(head), rest[0] if len(rest) == 1 else _subresource(path)
    if len(rest) == 1:
        return "/" + "/".join(head + rest), None
    if len(rest) == 2:
        return "/" + "/".join(head + rest[:1]), rest[1]
    raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")


def _subresource(path: str):
    raise ApiError(404, "NotFound", f"subresources are not served by the stand-in ({path})")


class FakeApiServer:
    """Start with `with FakeApiServer(pki, tokens={"t"}) as api:`; `api.url` is the base URL."""

    def __init__(self, pki: Pki, tokens: set[str] | None = None, client_cert_auth: bool = True,
                 netns: str | None = None):
        self.pki = pki
        self.netns = netns  # listen on 127.0.0.1 of this network namespace (a node's) instead of ours
        self.tokens = set(tokens or ())
        self.client_cert_auth = client_cert_auth
        self.store = Store()
        self.records: list[Record] = []
        self.faults: list[Fault] = []
        self.lock = threading.RLock()
        self.lease_holder_samples: list[tuple[float, int]] = []
        self.max_lease_holders = 0
        self.lease_steals: list[str] = []
        self.watch_events: list[WatchEvent] = []  # the retained history a WATCH replays from
        self._watch_versions: list[int] = []  # their resourceVersions, ascending (for bisect)
        self.watch_floor = 0  # a WATCH from a resourceVersion below this gets 410 Expired
        self.watch_generation = 0  # drop_watches() bumps it: open watches are cut
        self.changed = threading.Condition(self.lock)
        # admission(user, collection, name, new, old) -> None to admit, or the refusal message
        self.admission: Callable[[str, str, str, dict, dict], str | None] | None = None
        # token_review(token) -> user name, or None to refuse: a bearer token not in `tokens` is
        # judged by it, as a real API server asks a webhook (EKS: aws-iam-authenticator) about tokens
        self.token_review: Callable[[str], str | None] | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --
    def __enter__(self) -> "FakeApiServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"https://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        if self.client_cert_auth:
            ctx.load_verify_locations(self.pki.ca_cert)
            ctx.verify_mode = ssl.CERT_OPTIONAL
        server = self

        class Httpd(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024  # hundreds of agents connect at once

            def finish_request(self, request, client_address):
                # TLS handshake in the worker thread, so one slow client cannot stall accept().
                # TCP_NODELAY: headers and body go out in two writes; Nagle + delayed ACK
                # would otherwise add 40 ms to every response.
                try:
                    request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    tls = ctx.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    request.close()
                    return
                try:
                    self.RequestHandlerClass(tls, client_address, self)
                finally:
                    try:
                        tls.close()
                    except OSError:
                        pass

            def handle_error(self, request, client_address):  # a client hanging up is not news
                pass

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self):
                server._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        if self.netns:
            from tests.support.netns import in_netns

            self._httpd = in_netns(self.netns, lambda: Httpd(("127.0.0.1", 0), Handler))
        else:
            self._httpd = Httpd(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    # -- test helpers --
    def put_object(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Seed an object directly (as if another client had created it)."""
        collection, name = split_path(path)
        with self.lock:
            stored = copy.deepcopy(obj)
            meta = stored.setdefault("metadata", {})
            meta["name"] = name
            meta.setdefault("uid", str(uuid.uuid4()))
            meta["resourceVersion"] = self._next_version()
            existed = name in self.store.objects.get(collection, {})
            self.store.objects.setdefault(collection, {})[name] = stored
            self._emit(collection, "MODIFIED" if existed else "ADDED", stored)
            return copy.deepcopy(stored)

    def object(self, path: str) -> dict[str, Any] | None:
        collection, name = split_path(path)
        with self.lock:
            return copy.deepcopy(self.store.objects.get(collection, {}).get(name))

    def inject(self, status: int, times: int = 1, *, method: str | None = None, path_contains: str | None = None,
               retry_after: str | None = None) -> None:
        with self.lock:
            self.faults.append(Fault(status, times, method, path_contains, retry_after))

    def count(self, method: str | None = None, path_contains: str | None = None, status: int | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.records
                       if (method is None or r.method == method)
                       and (path_contains is None or path_contains in r.path)
                       and (status is None or r.status == status))

    def compact(self) -> None:
        """Forget the watch history, like etcd compaction: older resourceVersions get 410."""
        with self.lock:
            self.watch_floor = self.store.version
            self.watch_events.clear()
            self._watch_versions.clear()

    def drop_watches(self) -> None:
        """Cut every open watch without its final chunk (a load balancer or API server restart)."""
        with self.changed:
            self.watch_generation += 1
            self.changed.notify_all()

    def reset_records(self) -> None:
        with self.lock:
            self.records.clear()

    # -- request handling --
    def _next_version(self) -> str:
        self.store.version += 1
        return str(self.store.version)

    def _emit(self, collection: str, kind: str, obj: dict[str, Any]) -> None:
        """Call with the lock held: record a watch event and wake the watchers."""
        version = int(obj["metadata"]["resourceVersion"])
        self.watch_events.append(WatchEvent(version, collection, kind, copy.deepcopy(obj)))
        self._watch_versions.append(version)
        self.changed.notify_all()

    def _user(self, handler: BaseHTTPRequestHandler) -> str | None:
        auth = handler.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[len("Bearer "):]
            if token in self.tokens:
                return f"token-user-{sorted(self.tokens).index(token)}"
            return self.token_review(token) if self.token_review else None
        try:
            cert = handler.connection.getpeercert()
        except (AttributeError, ValueError):
            cert = None
        if cert:
            for rdn in cert.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        return value
        return None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        content_type = (h.headers.get("Content-Type") or "").split(";")[0].strip() or None
        user = self._user(h)
        status, payload, headers = 500, {}, {}
        watch = None
        try:
            if user is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            with self.lock:
                fault = next((f for f in self.faults if f.remaining > 0
                              and (f.method in (None, h.command))
                              and (f.path_contains is None or f.path_contains in url.path)), None)
                if fault:
                    fault.remaining -= 1
                    raise ApiError(fault.status, "TooManyRequests" if fault.status == 429 else "InternalError",
                                   "injected by the test", {"Retry-After": fault.retry_after} if fault.retry_after else {})
                query = parse_qs(url.query)
                if h.command == "GET" and (query.get("watch") or [""])[0] in ("1", "true"):
                    collection, name = split_path(url.path)
                    if name is not None:
                        raise ApiError(405, "MethodNotAllowed", "the stand-in watches collections only")
                    watch, status = (collection, query), 200
                else:
                    status, payload = self._dispatch(h.command, url.path, query, body, content_type, user)
        except ApiError as exc:
            status, headers = exc.code, exc.headers
            payload = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": exc.message, "reason": exc.reason, "code": exc.code}
        with self.lock:
            self.records.append(Record(h.command, url.path, status, user, content_type,
                                       watch=watch is not None))
        if watch is not None:
            self._stream_watch(h, *watch)
            return
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(data)

    def _stream_watch(self, h: BaseHTTPRequestHandler, collection: str, query: dict) -> None:
        """Chunked JSON lines, one event each, until timeoutSeconds, a drop, or the client leaves."""
        since = int((query.get("resourceVersion") or ["0"])[0] or 0)
        timeout = float((query.get("timeoutSeconds") or ["30"])[0])
        bookmarks = (query.get("allowWatchBookmarks") or [""])[0] in ("1", "true")
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

        def send(event: dict[str, Any]) -> None:
            data = json.dumps(event).encode() + b"\n"
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            h.wfile.flush()

        end = time.monotonic() + timeout
        try:
            with self.lock:
                generation = self.watch_generation
                expired = since and since < self.watch_floor
                if not since:  # no resourceVersion: the current objects first, as ADDED
                    since = self.store.version
                    replay = [{"type": "ADDED", "object": copy.deepcopy(o)}
                              for _, o in sorted(self.store.objects.get(collection, {}).items())]
                else:
                    replay = []
            if expired:
                send({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                  "reason": "Expired", "code": 410,
                                                  "message": f"too old resource version: {since}"}})
                h.wfile.write(b"0\r\n\r\n")
                return
            for event in replay:
                send(event)
            while True:
                with self.changed:
                    start = bisect.bisect_right(self._watch_versions, since)
                    pending = [e for e in self.watch_events[start:] if e.collection == collection]
                    if not pending and self.watch_generation == generation and time.monotonic() < end:
                        self.changed.wait(min(end - time.monotonic(), 1.0))
                        continue
                    dropped = self.watch_generation != generation
                    version = self.store.version
                if dropped:
                    h.close_connection = True
                    return  # no final chunk, nothing pending sent: the client sees a broken stream
                for event in pending:
                    send({"type": event.type, "object": copy.deepcopy(event.object)})
                    since = event.version
                if not pending and time.monotonic() >= end:
                    break
            if bookmarks:
                send({"type": "BOOKMARK", "object": {"kind": collection.rsplit("/", 1)[-1],
                                                     "metadata": {"resourceVersion": str(version)}}})
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except OSError:  # the client went away
            h.close_connection = True

    def _decode(self, body: bytes) -> Any:
        try:
            return json.loads(body or b"null")
        except ValueError:
            raise ApiError(400, "BadRequest", "the body is not valid JSON") from None

    def _dispatch(self, method: str, path: str, query: dict, body: bytes, content_type: str | None,
                  user: str = ""):
        collection, name = split_path(path)
        items = self.store.objects.setdefault(collection, {})
        kind_name = collection.rsplit("/", 1)[-1]
        if method == "GET":
            if name is None:
                return 200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(self.store.version)},
                             "items": [copy.deepcopy(o) for _, o in sorted(items.items())]}
            if name not in items:
                raise ApiError(404, "NotFound", f'{kind_name} "{name}" not found')
            return 200, copy.deepcopy(items[name])
        if method == "POST":
            if name is not None:
                raise ApiError(405, "MethodNotAllowed", "POST goes to the collection")
            obj = self._decode(body)
            meta = obj.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            new_name = meta.get("name")
            if not new_name:
                raise ApiError(422, "Invalid", "metadata.name: Required value")
            if new_name in items:
                raise ApiError(409, "AlreadyExists", f'{kind_name} "{new_name}" already exists')
            self._validate(obj)
            if kind_name == "events" and not (obj.get("involvedObject") or {}).get("namespace") \
                    and "/namespaces/default/" not in collection + "/":
                # core/v1 validation: an Event about a cluster-scoped object lives in `default`
                raise ApiError(422, "Invalid", "involvedObject.namespace: Invalid value: \"\": does not match event.namespace")
            meta.pop("resourceVersion", None)
            meta.update(uid=str(uuid.uuid4()), resourceVersion=self._next_version(),
                        creationTimestamp=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
            if "/namespaces/" in collection:
                meta["namespace"] = collection.split("/namespaces/")[1].split("/")[0]
            self._observe_write(collection, new_name, None, obj)
            items[new_name] = obj
            self._emit(collection, "ADDED", obj)
            return 201, copy.deepcopy(obj)
        if name is None or name not in items:
            raise ApiError(404 if name else 405, "NotFound" if name else "MethodNotAllowed",
                           f'{kind_name} "{name}" not found')
        current = items[name]
        if method == "DELETE":
            del items[name]
            current["metadata"]["resourceVersion"] = self._next_version()
            self._emit(collection, "DELETED", current)
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name}}
        if method == "PUT":
            new = self._decode(body)
            if (new.get("metadata") or {}).get("name") not in (None, name):
                raise ApiError(400, "BadRequest", "the name in the body does not match the URL")
        elif method == "PATCH":
            new = self._patched(current, self._decode(body), content_type)
        else:
            raise ApiError(405, "MethodNotAllowed", method)
        want_rv = (new.get("metadata") or {}).get("resourceVersion")
        if want_rv and want_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {kind_name} "{name}": the object has '
                                            "been modified; please apply your changes to the latest version and try again")
        if kind_name == "runtimeclasses" and new.get("handler") != current.get("handler"):
            raise ApiError(422, "Invalid", f'RuntimeClass.node.k8s.io "{name}" is invalid: handler: Invalid value: '
                                           '"...": field is immutable')
        self._validate(new)
        meta = new.setdefault("metadata", {})
        for keep in ("uid", "creationTimestamp", "namespace", "name"):
            if keep in current["metadata"]:
                meta[keep] = current["metadata"][keep]
        meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        refusal = self.admission(user, collection, name, copy.deepcopy(new), copy.deepcopy(current)) \
            if self.admission else None
        if refusal:
            raise ApiError(403, "Forbidden", f'{kind_name} "{name}" is forbidden: {refusal}')
        if new == current:  # no-op writes do not bump the resourceVersion
            return 200, copy.deepcopy(current)
        meta["resourceVersion"] = self._next_version()
        self._observe_write(collection, name, current, new)
        items[name] = new
        self._emit(collection, "MODIFIED", new)
        return 200, copy.deepcopy(new)

    @staticmethod
    def _patched(current: dict[str, Any], patch: Any, content_type: str | None) -> dict[str, Any]:
        if content_type == "application/merge-patch+json":
            return merge_patch(current, patch)
        if content_type == "application/strategic-merge-patch+json":
            try:
                return strategic_merge_patch(current, patch)
            except ValueError as exc:
                raise ApiError(400, "BadRequest", str(exc)) from None
        if content_type == "application/json-patch+json":
            try:
                return json_patch(current, patch)
            except ValueError as exc:  # kube-apiserver answers 422 when a patch cannot apply
                raise ApiError(422, "Invalid", str(exc)) from None
        raise ApiError(415, "UnsupportedMediaType", f"the stand-in does not serve patch type {content_type}")

    def _validate(self, obj: dict[str, Any]) -> None:
        problems = validate_metadata(obj)
        if problems:
            raise ApiError(422, "Invalid", "; ".join(problems))

    def _observe_write(self, collection: str, name: str, old: dict | None, new: dict) -> None:
        if not collection.endswith("/leases"):
            return
        now = time.time()
        old_holder = lease_holder(old, now)
        new_holder = ((new.get("spec") or {}).get("holderIdentity")) or None
        if old_holder and new_holder and new_holder != old_holder:
            self.lease_steals.append(f"{name}: {old_holder} -> {new_holder}")
        holders = sum(1 for n, lease in self.store.objects.get(collection, {}).items()
                      if n != name and lease_holder(lease, now))
        holders += 1 if lease_holder(new, now) else 0
        self.lease_holder_samples.append((now, holders))
        self.max_lease_holders = max(self.max_lease_holders, holders)


def kubeconfig_text(server: str, *, user: dict[str, Any], cluster_extra: dict[str, Any]) -> str:
    """A kubeconfig (as JSON, which is YAML) for the stand-in."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "standin",
        "clusters": [{"name": "standin", "cluster": {"server": server, **cluster_extra}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "u"}}],
    }, indent=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- pytest fixtures (import them into a test module) --------------------------------------

import pytest  # noqa: E402

TOKEN = "s3cr3t-token-for-the-stand-in"


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def apiserver(pki, monkeypatch):
    """A running stand-in accepting TOKEN; CA-bundle environment variables unset (they would
    otherwise let requests trust the machine's CAs — the client must not need that)."""
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "KUBECONFIG", "KUBERNETES_SERVICE_HOST",
                "KUBERNETES_SERVICE_PORT", "HTTPS_PROXY", "https_proxy", "NODE_NAME"):
        monkeypatch.delenv(var, raising=False)
    with FakeApiServer(pki, tokens={TOKEN}) as server:
        yield server


@pytest.fixture
def kc(tmp_path, apiserver, pki) -> str:  # noqa: F811
    """Path of a kubeconfig for the running stand-in: TOKEN auth, the stand-in's CA trusted."""
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig_text(apiserver.url, user={"token": TOKEN},
                                    cluster_extra={"certificate-authority": str(pki.ca_cert)}))
    return str(path)
