"""`kube.watch.CollectionView`: one LIST, then a WATCH kept alive, against the stand-in API server.

The stand-in (tests/support/fake_apiserver.py) is not Kubernetes (no kube-apiserver can be had
here), but it serves real chunked HTTPS watches with bookmarks, ends them at `timeoutSeconds`,
answers 410 Expired after `compact()` and cuts open streams on `drop_watches()`.
"""

from __future__ import annotations

import threading
import time

import pytest

from nodeagent.kube.client import KubeClient
from nodeagent.kube.credentials import from_kubeconfig
from nodeagent.kube.watch import CollectionView
from tests.support.fake_apiserver import apiserver, kc, pki  # noqa: F401 (fixtures)
from tests.support.wait import wait_for

LEASES = "/apis/coordination.k8s.io/v1/namespaces/nodeagent/leases"


def lease(holder: str) -> dict:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": holder}}


@pytest.fixture
def api(kc):  # noqa: F811
    with KubeClient(from_kubeconfig(kc)) as client:
        yield client


@pytest.fixture
def make_view(api):
    views = []

    def make(**kw) -> CollectionView:
        views.append(CollectionView(api, LEASES, **kw))
        return views[-1]

    yield make
    for v in views:
        v.stop()


def holders(view: CollectionView) -> dict[str, str]:
    return {name: o["spec"]["holderIdentity"] for name, o in view.snapshot().items()}


def test_relist_takes_every_item_and_the_lists_resource_version(apiserver, make_view):  # noqa: F811
    apiserver.put_object(f"{LEASES}/a", lease("node-1"))
    apiserver.put_object(f"{LEASES}/b", lease("node-2"))
    view = make_view()
    view.relist()
    assert holders(view) == {"a": "node-1", "b": "node-2"}
    assert view.resource_version == str(apiserver.store.version) and view.relists == 1
    apiserver.put_object(f"{LEASES}/a", lease("node-3"))
    assert holders(view)["a"] == "node-1"  # nothing changes without a watch or a LIST
    view.relist()
    assert holders(view) == {"a": "node-3", "b": "node-2"} and view.relists == 2


def test_an_empty_collection_lists_as_empty(make_view):
    view = make_view()
    view.relist()
    assert view.items == {} and view.relists == 1


def test_the_watch_applies_added_modified_and_deleted(apiserver, api, make_view):  # noqa: F811
    apiserver.put_object(f"{LEASES}/a", lease("node-1"))
    view = make_view()
    view.relist()
    view.start()
    apiserver.put_object(f"{LEASES}/b", lease("node-2"))
    apiserver.put_object(f"{LEASES}/a", lease("node-9"))
    wait_for(lambda: holders(view) == {"a": "node-9", "b": "node-2"}, 10, "the ADDED and MODIFIED events")
    assert api.delete(f"{LEASES}/b")
    wait_for(lambda: holders(view) == {"a": "node-9"}, 10, "the DELETED event")
    assert view.resource_version == str(apiserver.store.version)
    assert view.relists == 1 and view.reconnects == 0
    assert apiserver.count("GET", "/leases") == 2  # one LIST, one WATCH: no polling


def test_readers_wake_on_changed(apiserver, make_view):  # noqa: F811
    view = make_view()
    view.relist()
    view.start()
    time.sleep(0.2)  # let the watch open (a change before it would be replayed anyway)
    apiserver.put_object(f"{LEASES}/a", lease("node-1"))
    with view.changed:
        assert view.changed.wait_for(lambda: "a" in view.items, timeout=10)


def test_the_servers_timeout_reconnects_from_the_last_version_without_a_list(apiserver, make_view):  # noqa: F811
    view = make_view(timeout_seconds=1)
    view.relist()
    view.start()
    wait_for(lambda: _watches(apiserver) >= 2, 10, "a second WATCH")
    apiserver.put_object(f"{LEASES}/a", lease("node-1"))
    wait_for(lambda: "a" in view.snapshot(), 10, "the event on the renewed watch")
    assert view.relists == 1 and view.reconnects == 0


def _watches(apiserver) -> int:  # noqa: F811
    with apiserver.lock:
        return sum(1 for r in apiserver.records if r.watch)


def test_an_expired_version_lists_again(apiserver, make_view):  # noqa: F811
    apiserver.put_object(f"{LEASES}/a", lease("node-1"))
    view = make_view(timeout_seconds=1)
    view.relist()
    apiserver.put_object(f"{LEASES}/b", lease("node-2"))
    apiserver.compact()  # the view's version is now older than the server's history: 410
    view.start()
    wait_for(lambda: view.relists == 2, 10, "a LIST after 410 Expired")
    assert holders(view) == {"a": "node-1", "b": "node-2"}
    apiserver.put_object(f"{LEASES}/c", lease("node-3"))
    wait_for(lambda: "c" in view.snapshot(), 10, "the watch after the new LIST")


def test_a_dropped_stream_reconnects_and_misses_nothing(apiserver, make_view):  # noqa: F811
    view = make_view()
    view.relist()
    view.start()
    wait_for(lambda: _watches(apiserver) >= 1, 10, "the WATCH")
    time.sleep(0.2)
    apiserver.drop_watches()
    apiserver.put_object(f"{LEASES}/a", lease("node-1"))  # while the view is reconnecting
    wait_for(lambda: "a" in view.snapshot(), 10, "the change made while the stream was down")
    assert view.reconnects >= 1 and view.relists == 1


def watch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"watch{LEASES}"]


def test_stop_ends_a_blocked_watch_and_start_is_once(api, apiserver, make_view):  # noqa: F811
    view = make_view(timeout_seconds=300)
    view.relist()
    view.start()
    view.start()
    wait_for(lambda: _watches(apiserver) >= 1, 10, "the WATCH")
    time.sleep(0.2)
    assert len(watch_threads()) == 1 and _watches(apiserver) == 1
    view.stop()  # joins for at most 5 s: a read still blocked would leave the thread alive
    assert watch_threads() == [], "stop() left the watch thread blocked in its read"


def test_snapshot_is_a_copy(apiserver, make_view):  # noqa: F811
    apiserver.put_object(f"{LEASES}/a", lease("node-1"))
    view = make_view()
    view.relist()
    snap = view.snapshot()
    snap["a"]["spec"]["holderIdentity"] = "changed"
    assert holders(view) == {"a": "node-1"}
