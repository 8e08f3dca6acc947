"""Fleet safety: at most N nodes restart containerd at the same time.

N slot Leases (`coordination.k8s.io/v1`, named `<prefix>-0 .. <prefix>-(N-1)`) live in the
agent's namespace. Taking a slot = creating its Lease, or writing ourselves into a free or
expired one with its resourceVersion, so two nodes racing for one slot cannot both win
(the loser gets 409 and tries another slot). A waiting node LISTs the slots once, then WATCHes
them (kube/watch.py): it wakes when a holder releases or renews, or when a holder's lease
expires, and claims a free slot after a short random delay, so that of a fleet woken by one
release most see the winner's claim before they try (few 409s instead of one per waiter).
The holder renews while it works and clears `holderIdentity` when done. At rest an agent makes
no Lease requests at all.

Expiry is judged on our clock against the holder's renewTime (+ leaseDurationSeconds): keep
node clocks in sync (NTP) and the duration well above the skew and a restart's length.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import threading
import time
from typing import Any, Callable, Iterator
from urllib.parse import quote

import structlog

from nodeagent.dicts import dig, items, table
from nodeagent.errors import KubeError
from nodeagent.kube.client import KubeClient, KubeConflict
from nodeagent.kube.watch import CollectionView

log = structlog.get_logger(__name__)

DEFAULT_PREFIX = "nodeagent-restart"
DEFAULT_NAMESPACE = "nodeagent"


class LeaseTimeout(KubeError):
    default_hint = ("other nodes are holding every restart slot; wait, raise max_concurrent_restarts, "
                    "or check for stuck holders with `kubectl get lease -n <namespace>`")


def microtime(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_microtime(text: str | None) -> float | None:
    if not text:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.timezone.utc).timestamp()
        except ValueError:
            continue
    return None


def lease_namespace(environ: dict[str, str] | None = None) -> str:
    """The DaemonSet passes its namespace via the downward API as POD_NAMESPACE."""
    environ = os.environ if environ is None else environ
    return environ.get("POD_NAMESPACE") or DEFAULT_NAMESPACE


def _version(lease: dict[str, Any] | None) -> str | None:
    return dig(lease, "metadata", "resourceVersion")


def is_free(lease: dict[str, Any], now: float) -> bool:
    """Nobody holds it, or the holder stopped renewing longer than leaseDurationSeconds ago."""
    spec = table(lease, "spec")
    if not spec.get("holderIdentity"):
        return True
    renewed = parse_microtime(spec.get("renewTime")) or parse_microtime(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds") or 0
    return renewed is None or renewed + duration < now


class RestartSlots:
    """A counting semaphore over N Leases. Use `with slots.hold(timeout): restart()`."""

    def __init__(
        self,
        api: KubeClient,
        identity: str,
        *,
        slots: int = 1,
        namespace: str = DEFAULT_NAMESPACE,
        prefix: str = DEFAULT_PREFIX,
        lease_duration: int = 120,
        poll: float = 5.0,
        claim_jitter: float = 1.0,
        watch_timeout: int = 300,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if slots < 1:
            raise KubeError(f"max_concurrent_restarts must be at least 1, not {slots}",
                            "set max_concurrent_restarts to 1 or more")
        self.api = api
        self.identity = identity
        self.slots = slots
        self.namespace = namespace
        self.prefix = prefix
        self.lease_duration = lease_duration
        self.poll = poll  # longest sleep between looks while the watch is down
        self.claim_jitter = claim_jitter
        self.watch_timeout = watch_timeout
        self._clock = clock
        self._sleep = sleep
        self.races_lost = 0
        self.held: dict[str, Any] | None = None  # the Lease object we hold (with its resourceVersion)
        self._lock = threading.Lock()

    @property
    def collection(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{quote(self.namespace, safe='')}/leases"

    def _path(self, name: str) -> str:
        return f"{self.collection}/{quote(name, safe='')}"

    def _spec(self, now: float, transitions: int = 0) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_duration,
            "acquireTime": microtime(now),
            "renewTime": microtime(now),
            "leaseTransitions": transitions,
        }

    def _names(self) -> list[str]:
        return [f"{self.prefix}-{i}" for i in range(self.slots)]

    def try_acquire(self) -> str | None:
        """One look at all slots (a single LIST), then a claim on a free one; its name if we got it."""
        existing = {dig(l, "metadata", "name"): l for l in items(self.api.get(self.collection), "items")}
        return self._claim(existing, {})

    def _claim(self, existing: dict[str, Any], tried: dict[str, str | None]) -> str | None:
        """Claim a free slot of `existing` (name -> Lease as last seen); `tried` records the
        resourceVersion of each slot we lost a race for, so a stale view is not tried twice."""
        names = self._names()
        now = self._clock()
        mine = [n for n in names if dig(existing.get(n), "spec", "holderIdentity") == self.identity]
        free = [n for n in names if n not in existing or is_free(existing[n], now)]
        random.shuffle(free)  # spread a fleet over the slots instead of all fighting for slot 0
        for name in mine[:1] + free:  # ours already (we restarted mid-hold) comes first
            lease = existing.get(name)
            try:
                if lease is None:
                    self.held = self.api.create(self.collection, {
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": name, "namespace": self.namespace,
                                     "labels": {"app.kubernetes.io/managed-by": "nodeagent"}},
                        "spec": self._spec(now),
                    })
                    return name
                spec = table(lease, "spec")
                transitions = int(spec.get("leaseTransitions") or 0)
                if spec.get("holderIdentity") not in (None, "", self.identity):
                    transitions += 1  # taking over an expired holder's slot
                claimed = dict(lease)
                claimed["spec"] = self._spec(now, transitions)
                # carries the resourceVersion we saw: if anyone wrote since, this is a 409
                self.held = self.api.update(self._path(name), claimed)
                return name
            except KubeConflict:
                tried[name] = _version(lease)  # another node won this slot a moment ago
                self.races_lost += 1
        return None

    def _claimable(self, items: dict[str, Any], tried: dict[str, str | None], now: float) -> list[str]:
        """Slots that look free in the watched view and that we have not lost a race for as seen."""
        return [n for n in self._names()
                if (n not in items or is_free(items[n], now)) and (n not in tried or tried[n] != _version(items.get(n)))]

    def _next_expiry(self, items: dict[str, Any]) -> float | None:
        ends = []
        for lease in items.values():
            spec = table(lease, "spec")
            renewed = parse_microtime(spec.get("renewTime")) or parse_microtime(spec.get("acquireTime"))
            if spec.get("holderIdentity") and renewed is not None:
                ends.append(renewed + (spec.get("leaseDurationSeconds") or 0))
        return min(ends) if ends else None

    def _wait_for_free(self, view: CollectionView, tried: dict[str, str | None], deadline: float) -> None:
        """Block until a slot looks free (then a random 0..claim_jitter s more, still free) or the deadline."""
        claim_at = None
        with view.changed:
            while True:
                now = self._clock()
                if now >= deadline:
                    return
                if self._claimable(view.items, tried, now):
                    # each race lost doubles our delay (up to 16x): of a herd woken by one release,
                    # the nodes that keep losing step back, like Ethernet's back-off after a collision
                    spread = self.claim_jitter * 2 ** min(self.races_lost, 4)
                    claim_at = claim_at if claim_at is not None else now + random.random() * spread
                    if now >= claim_at:
                        return
                    wake = claim_at
                else:
                    claim_at = None  # someone else got it first: wait for the next change
                    expiry = self._next_expiry(view.items)
                    wake = min(deadline, expiry + 0.05 if expiry is not None else deadline)
                view.changed.wait(max(0.01, min(wake - now, self.poll)))

    def acquire(self, timeout: float) -> str:
        """Wait (LIST once, then WATCH) until a slot is ours; LeaseTimeout after `timeout` seconds."""
        deadline = self._clock() + timeout
        view = CollectionView(self.api, self.collection, timeout_seconds=self.watch_timeout)
        view.relist()
        self.races_lost = 0
        tried: dict[str, str | None] = {}
        try:
            while True:
                name = self._claim(view.snapshot(), tried)
                if name:
                    log.info("restart slot acquired", lease=name, namespace=self.namespace)
                    return name
                if self._clock() >= deadline:
                    raise LeaseTimeout(f"no restart slot free in namespace {self.namespace} after {timeout:.0f}s "
                                       f"({self.slots} slot(s))")
                view.start()  # once; a no-op after
                self._wait_for_free(view, tried, deadline)
        finally:
            view.stop()

    def renew(self) -> None:
        """Push renewTime forward; KubeConflict means someone took the slot (we were too slow)."""
        with self._lock:
            if self.held is None:
                return
            lease = dict(self.held)
            lease["spec"] = dict(table(lease, "spec"), renewTime=microtime(self._clock()))
            self.held = self.api.update(self._path(lease["metadata"]["name"]), lease)

    def release(self) -> None:
        """Clear holderIdentity so the next node can go at once (not after expiry)."""
        with self._lock:
            if self.held is None:
                return
            name = self.held["metadata"]["name"]
            lease = dict(self.held)
            for _attempt in range(3):
                spec = dict(table(lease, "spec"))
                if spec.get("holderIdentity") != self.identity:
                    break  # not ours any more
                spec.pop("holderIdentity", None)
                spec.pop("acquireTime", None)
                spec.pop("renewTime", None)
                lease["spec"] = spec
                try:
                    self.api.update(self._path(name), lease)
                    break
                except KubeConflict:
                    lease = self.api.get(self._path(name)) or {}
            self.held = None
            log.info("restart slot released", lease=name)

    @contextlib.contextmanager
    def hold(self, timeout: float) -> Iterator[str]:
        """Acquire a slot, renew it in the background while the body runs, always release."""
        name = self.acquire(timeout)
        stop = threading.Event()

        def renewer() -> None:
            while not stop.wait(self.lease_duration / 3):
                try:
                    self.renew()
                except KubeError as exc:
                    log.error("could not renew restart slot", lease=name, error=exc.message)

        thread = threading.Thread(target=renewer, name=f"lease-{name}", daemon=True)
        thread.start()
        try:
            yield name
        finally:
            stop.set()
            thread.join()
            try:
                self.release()
            except KubeError as exc:  # expiry frees it anyway
                log.warning("could not release restart slot; it frees itself on expiry", lease=name, error=exc.message)
