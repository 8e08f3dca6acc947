"""Events on the Node (install, rollback, failure) so `kubectl describe node` tells the story.

Events are best effort: a failure to record one is logged, never raised — it must not turn a
good install into a failed one. Like kubelet's node events they live in the `default` namespace
with the Node as involvedObject (kubelet uses the node name as its uid there too).
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from nodeagent.errors import KubeError
from nodeagent.kube.client import KubeClient
from nodeagent.kube.lease import microtime

log = structlog.get_logger(__name__)

EVENT_NAMESPACE = "default"
COMPONENT = "nodeagent"


def node_event(node: str, reason: str, message: str, *, event_type: str = "Normal",
               now: float | None = None) -> dict[str, Any]:
    """A core/v1 Event about the Node; `reason` is CamelCase like Kubernetes' own."""
    stamp = time.time() if now is None else now
    second = microtime(stamp)[:19] + "Z"  # firstTimestamp/lastTimestamp are whole-second Times
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{node}.nodeagent.", "namespace": EVENT_NAMESPACE},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node},
        "reason": reason,
        "message": message[:1024],
        "type": event_type,
        "source": {"component": COMPONENT, "host": node},
        "reportingComponent": COMPONENT,
        "reportingInstance": node,
        "firstTimestamp": second,
        "lastTimestamp": second,
        "count": 1,
    }


def record(api: KubeClient, node: str, reason: str, message: str, *, event_type: str = "Normal") -> dict[str, Any] | None:
    """Post an Event; returns the created object, or None if it could not be recorded."""
    try:
        return api.create(f"/api/v1/namespaces/{EVENT_NAMESPACE}/events",
                          node_event(node, reason, message, event_type=event_type))
    except KubeError as exc:
        log.warning("could not record node event", reason=reason, error=exc.message)
        return None
