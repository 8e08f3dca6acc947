"""A collection kept current by one LIST and then a WATCH (a minimal informer).

Waiting agents used to LIST the restart Leases once per poll: a fleet of N waiting nodes made
N LISTs per poll period for as long as the rollout lasted. A view LISTs once, then WATCHes from
the LIST's resourceVersion with bookmarks, so an idle wait costs one open connection and the
server pushes each change once. The stream ends after `timeout_seconds` (the server closes it):
the view reconnects from the last resourceVersion it saw. A broken stream or an unreachable
server reconnects with exponential back-off and jitter; 410 Gone (the version fell out of the
server's history) LISTs again, as client-go's reflector does.

The stream is read in a daemon thread; readers wait on `changed` (a Condition) and read `items`
while holding it. `stop()` shuts the socket down so a blocked read ends at once.
"""

from __future__ import annotations

import copy
import random
import threading
from typing import Any

import structlog

from nodeagent.errors import KubeError
from nodeagent.kube.client import KubeClient, KubeGone
from nodeagent.dicts import dig, items, table

log = structlog.get_logger(__name__)

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0


class CollectionView:
    """`items` (name -> object) of one collection, updated from a watch in a background thread."""

    def __init__(self, api: KubeClient, collection: str, *, timeout_seconds: int = 300):
        self.api = api
        self.collection = collection
        self.timeout_seconds = timeout_seconds
        self.changed = threading.Condition()
        self.items: dict[str, dict[str, Any]] = {}
        self.resource_version = ""
        self.relists = 0
        self.reconnects = 0
        self._stop = threading.Event()
        self._stream: Any = None
        self._thread: threading.Thread | None = None

    def relist(self) -> None:
        """One LIST: replaces every item and the resourceVersion the watch continues from."""
        listing = self.api.get(self.collection)
        found = {dig(o, "metadata", "name"): o for o in items(listing, "items")}
        with self.changed:
            self.items = found
            self.resource_version = str(dig(listing, "metadata", "resourceVersion") or "")
            self.relists += 1
            self.changed.notify_all()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self.changed:
            return copy.deepcopy(self.items)

    def start(self) -> None:
        """Watch in the background (call relist() first); a second call does nothing."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"watch{self.collection}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            self._shutdown(stream)
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self.changed:
            self.changed.notify_all()

    def _apply(self, event: dict[str, Any]) -> None:
        obj = table(event, "object")
        meta = table(obj, "metadata")
        with self.changed:
            if event.get("type") in ("ADDED", "MODIFIED"):
                self.items[meta.get("name")] = obj
            elif event.get("type") == "DELETED":
                self.items.pop(meta.get("name"), None)
            if meta.get("resourceVersion"):
                self.resource_version = str(meta["resourceVersion"])  # BOOKMARKs carry only this
            self.changed.notify_all()

    def _open(self, stream: Any) -> None:
        self._stream = stream
        if self._stop.is_set():  # stop() ran while this watch was being opened: end it now
            self._shutdown(stream)

    @staticmethod
    def _shutdown(stream: Any) -> None:
        try:
            stream.shutdown()  # urllib3 >= 2.3: ends a read blocked in the watch thread
        except (AttributeError, OSError):
            stream.close()

    def _run(self) -> None:
        backoff = FIRST_BACKOFF
        expired_before = False
        while not self._stop.is_set():
            try:
                for event in self.api.watch(self.collection, self.resource_version,
                                            timeout_seconds=self.timeout_seconds,
                                            stop=self._stop.is_set, on_open=self._open):
                    self._apply(event)
                    backoff, expired_before = FIRST_BACKOFF, False
                continue  # the server ended the stream at its timeout: go on from where we are
            except KubeGone as exc:
                log.info("watch expired; listing again", collection=self.collection)
                error = exc.message
                try:
                    self.relist()
                    if not expired_before:  # again right after a fresh LIST: back off below
                        expired_before = True
                        continue
                except KubeError as relist_exc:
                    error = relist_exc.message
            except KubeError as exc:
                error = exc.message
            finally:
                self._stream = None
            if self._stop.is_set():
                break
            delay = backoff * (0.5 + random.random() / 2)
            log.info("watch broke; reconnecting", collection=self.collection, error=error, delay=round(delay, 2))
            self.reconnects += 1
            if self._stop.wait(delay):
                break
            backoff = min(backoff * 2, MAX_BACKOFF)
