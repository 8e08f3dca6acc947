"""A small Kubernetes API client on requests: verified TLS, timeouts, bounded retries.

Why not a Session's own CA: `REQUESTS_CA_BUNDLE` / `CURL_CA_BUNDLE` in the environment override
`session.verify` (requests merges environment settings over session ones), so the cluster CA is
passed as `verify=` on every request and `session.trust_env` is off. trust_env also brings .netrc
credentials, which must never replace our Authorization header. Proxies are the one thing from
the environment we keep, like client-go: HTTPS_PROXY / NO_PROXY are resolved per request.

Retries: 429 and 500/502/503/504 and connection errors are retried a bounded number of times
with exponential backoff plus jitter, honouring `Retry-After` (capped). A retried create may
answer 409 AlreadyExists; callers treat that as "someone (maybe us) created it". A 401 with a
kubeconfig exec credential runs the plugin again and retries once, as client-go does.

Why not a client library (lightkube 1.0.1, measured 2026-12-05): its exec support refuses
`client.authentication.k8s.io/v1` (what GKE and AKS write), sends no KUBERNETES_EXEC_INFO, ignores
expirationTimestamp and exec client certificates, and its import (httpx, anyio, models) costs
2.4 MB more RSS than requests + yaml in a round's child. Our verbs are few; this file keeps them.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from typing import Any, Callable, Iterator, Mapping

import requests
import structlog
import urllib3

from nodeagent import __version__
from nodeagent.errors import KubeError
from nodeagent.kube.credentials import Credentials, describe, load_credentials
from nodeagent.dicts import table

log = structlog.get_logger(__name__)

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
_PATCH_TYPES = {"merge": MERGE_PATCH, "strategic": STRATEGIC_MERGE_PATCH, "json": JSON_PATCH}
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class KubeNotFound(KubeError):
    default_hint = "check the object's name and namespace"


class KubeConflict(KubeError):
    """409: AlreadyExists on create, Conflict on a stale resourceVersion."""

    default_hint = "another writer changed the object; run again"

    def __init__(self, message: str, hint: str | None = None, reason: str = "Conflict"):
        super().__init__(message, hint)
        self.reason = reason


class KubeGone(KubeError):
    """410: the resourceVersion a watch asked for is older than the server keeps; LIST again."""

    default_hint = "the watch fell too far behind; it re-lists on its own"


class KubeUnauthorized(KubeError):
    default_hint = "the API server rejected the credentials: refresh the kubeconfig token/certificate or the service account"


# the plugin ran and gave a fresh token twice; the cluster does not map that identity to a user
_EXEC_401_HINT = ("the credential plugin's fresh token was refused too: check the cloud identity it logs in as "
                  "is mapped into the cluster (EKS access entries / aws-auth, GKE IAM, AKS Entra ID) and that "
                  "the kubeconfig's cluster matches the plugin's args")


class KubeForbidden(KubeError):
    default_hint = "grant the service account the RBAC rules in deploy/ (see deploy/README.md)"


# RBAC allowed the verb, an admission policy refused the change (the API server says which).
_ADMISSION_HINT = ("deploy/admission-policy.yaml lets the agent change only the Node its token names, and there only "
                   "labels under its prefix: check --node-name/NODE_NAME is this node, the cluster is Kubernetes >= 1.30, "
                   "and the policy's prefix and startup taint match the settings (deploy/README.md)")


class KubeInvalid(KubeError):
    default_hint = "the API server rejected the object as invalid; check the settings that shape it"


class KubeUnavailable(KubeError):
    default_hint = "check the API server is reachable from this node (network, proxy, NO_PROXY) and healthy"


def _retry_after(value: str | None, cap: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped; None if absent/invalid."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, min(seconds, cap))


class KubeClient:
    """Thin verbs over the REST API. Paths are API paths, e.g. `/api/v1/nodes/NAME`."""

    def __init__(
        self,
        creds: Credentials,
        *,
        timeout: tuple[float, float] = (5.0, 30.0),
        retries: int = 4,
        backoff: float = 0.5,
        max_retry_after: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.creds = creds
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self.session = requests.Session()
        self.session.trust_env = False  # see module docstring: env CA bundles and .netrc must not apply
        self.requests_made = 0

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> "KubeClient":
        return cls(load_credentials(getattr(settings, "kubeconfig", None)), **kwargs)

    def close(self) -> None:
        self.session.close()
        self.creds.close()

    def __enter__(self) -> "KubeClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        for secret in self.creds.secrets():
            text = text.replace(secret, "<redacted>")
        return text

    def _proxies(self, url: str) -> dict[str, str]:
        return requests.utils.get_environ_proxies(url)

    def _send(self, method: str, url: str, body: bytes | None, content_type: str | None,
              params: Mapping[str, str] | None) -> requests.Response:
        headers = {"Accept": "application/json", "User-Agent": f"nodeagent/{__version__}"}
        if content_type:
            headers["Content-Type"] = content_type
        token, cert = self.creds.request_auth()  # re-read every time: rotated tokens, expiring exec credentials
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.requests_made += 1
        return self.session.request(
            method, url, data=body, headers=headers, params=params, timeout=self.timeout,
            verify=self.creds.ca_file or True, cert=cert, proxies=self._proxies(url),
            allow_redirects=False,
        )

    def request(self, method: str, path: str, *, body: Any = None, content_type: str | None = None,
                params: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        """One API call with retries; returns the decoded JSON body, or raises a KubeError subclass."""
        url = self.creds.server + path
        data = None if body is None else json.dumps(body).encode()
        if data is not None and content_type is None:
            content_type = "application/json"
        attempt = 0
        renewed = False
        while True:
            try:
                resp = self._send(method, url, data, content_type, params)
            except requests.exceptions.SSLError as exc:
                raise KubeError(
                    f"TLS verification of the API server {self.creds.server} failed: {self._redact(_short(exc))}",
                    "the server's certificate is not signed by the configured CA: check certificate-authority(-data) "
                    "in the kubeconfig, or the service account's ca.crt",
                ) from None
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                if attempt >= self.retries:
                    raise KubeUnavailable(
                        f"cannot reach the API server {self.creds.server} after {attempt + 1} attempts: {self._redact(_short(exc))}"
                    ) from None
                delay = self._backoff(attempt, None)
                log.info("kube request failed, retrying", method=method, path=path, error=type(exc).__name__, delay=delay)
            else:
                if resp.status_code == 401 and not renewed and self.creds.renew():
                    renewed = True  # an exec plugin's token was revoked or rotated early: fetch a new one, once
                    log.info("kube request unauthorized, renewing the exec credential", method=method, path=path)
                    continue
                if resp.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    return self._result(method, path, resp)
                delay = self._backoff(attempt, _retry_after(resp.headers.get("Retry-After"), self.max_retry_after))
                log.info("kube request throttled or failed, retrying", method=method, path=path,
                         status=resp.status_code, delay=round(delay, 3))
            attempt += 1
            self._sleep(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        base = min(self.backoff * (2 ** attempt), self.max_retry_after)
        return base * (0.5 + random.random() / 2)  # jitter: a fleet must not retry in lockstep

    def _result(self, method: str, path: str, resp: requests.Response) -> dict[str, Any] | None:
        if 200 <= resp.status_code < 300:
            if not resp.content:
                return None
            try:
                return resp.json()
            except ValueError:
                raise KubeError(f"{method} {path}: the API server answered {resp.status_code} with a body that is not JSON",
                                "check the server URL points at a Kubernetes API server") from None
        try:
            status = resp.json()
        except ValueError:
            status = {}
        message = self._redact(str(status.get("message") or resp.reason or "").strip())
        reason = str(status.get("reason") or "")
        what = f"{method} {path}: {resp.status_code} {reason or resp.reason}" + (f": {message}" if message else "")
        code = resp.status_code
        if code == 401:
            raise KubeUnauthorized(f"the API server {self.creds.server} rejected our credentials ({describe(self.creds)['auth']}): 401 Unauthorized",
                                   _EXEC_401_HINT if self.creds.exec_plugin else None)
        if code == 403:
            raise KubeForbidden(what, _ADMISSION_HINT if "ValidatingAdmissionPolicy" in message else None)
        if code == 404:
            raise KubeNotFound(what)
        if code == 409:
            raise KubeConflict(what, reason=reason or "Conflict")
        if code == 410:
            raise KubeGone(what)
        if code == 422:
            raise KubeInvalid(what)
        if code in RETRY_STATUSES:
            raise KubeUnavailable(f"{what} (gave up after {self.retries + 1} attempts)")
        raise KubeError(what)

    # -- verbs ---------------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        try:
            return self.request("GET", path, params=params)
        except KubeNotFound:
            return None

    def create(self, collection_path: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """POST into a collection; raises KubeConflict(reason="AlreadyExists") if the name is taken."""
        return self.request("POST", collection_path, body=obj) or {}

    def update(self, path: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """PUT the whole object; with metadata.resourceVersion set a stale write raises KubeConflict."""
        return self.request("PUT", path, body=obj) or {}

    def patch(self, path: str, patch: Any, strategy: str = "merge") -> dict[str, Any]:
        """PATCH with RFC 7386 merge-patch ("merge"), Kubernetes strategic-merge-patch ("strategic")
        or an RFC 6902 JSON patch ("json": a list of operations; a failed `test` op is a 422)."""
        if strategy not in _PATCH_TYPES:
            raise ValueError(f"unknown patch strategy {strategy!r}")
        return self.request("PATCH", path, body=patch, content_type=_PATCH_TYPES[strategy]) or {}

    def watch(self, collection_path: str, resource_version: str, *, timeout_seconds: int,
              stop: Callable[[], bool] = lambda: False,
              on_open: Callable[[Any], None] = lambda response: None) -> Iterator[dict[str, Any]]:
        """WATCH a collection from `resource_version`: yields each event ({"type", "object"}), BOOKMARKs
        included, until the server ends the stream (after `timeout_seconds`) or `stop()` is true.

        One attempt, no retries: the caller reconnects with its own back-off. KubeGone when the
        version is too old (an HTTP 410 or an ERROR event with code 410): LIST again. A broken
        stream is KubeUnavailable. `on_open` gets the streaming response so another thread can
        `shutdown()` it to end a blocked read.
        """
        url = self.creds.server + collection_path
        params = {"watch": "1", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(int(timeout_seconds))}
        headers = {"Accept": "application/json", "User-Agent": f"nodeagent/{__version__}"}
        token = self.creds.bearer_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.requests_made += 1
        try:
            resp = self.session.get(url, params=params, headers=headers, stream=True,
                                    timeout=(self.timeout[0], timeout_seconds + self.timeout[1]),
                                    verify=self.creds.ca_file or True, cert=self.creds.client_cert,
                                    proxies=self._proxies(url), allow_redirects=False)
        except requests.exceptions.RequestException as exc:
            raise KubeUnavailable(f"cannot watch {collection_path}: {self._redact(_short(exc))}") from None
        with resp:
            if resp.status_code != 200:
                self._result("WATCH", collection_path, resp)  # raises the matching KubeError
                raise KubeError(f"WATCH {collection_path}: unexpected status {resp.status_code}")
            on_open(resp.raw)
            try:
                for line in resp.iter_lines():
                    if stop():
                        return
                    if not line:
                        continue
                    event = json.loads(line)
                    obj = table(event, "object")
                    if event.get("type") == "ERROR":
                        if obj.get("code") == 410:
                            raise KubeGone(f"WATCH {collection_path}: {obj.get('message') or 'resource version expired'}")
                        raise KubeUnavailable(f"WATCH {collection_path}: {obj.get('code')} {obj.get('message')}")
                    yield event
            except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, ValueError, OSError) as exc:
                if stop():
                    return
                raise KubeUnavailable(f"the watch of {collection_path} broke: {self._redact(_short(exc))}") from None

    def delete(self, path: str) -> bool:
        """True if deleted, False if it was already gone."""
        try:
            self.request("DELETE", path)
        except KubeNotFound:
            return False
        return True


def _short(exc: BaseException) -> str:
    """The last, most specific line of a requests/urllib3 exception chain."""
    text = str(exc)
    for marker in ("SSLError(", "NewConnectionError(", "ConnectTimeoutError(", "ReadTimeoutError("):
        if marker in text:
            text = text[text.index(marker):]
            break
    return text[:300]
