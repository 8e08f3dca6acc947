"""`nodeagent rollout status|resume`: what halted the fleet's rollout, and letting it go on.

The agents record failed converges per desired state in the ConfigMap `nodeagent-rollout` of
their namespace (kube/rollout.py). `status` lists the failed nodes and why; `resume` deletes the
record (as `kubectl delete configmap nodeagent-rollout` would), so waiting agents restart
containerd again at their next round. Runs with the operator's credentials (--kubeconfig).
"""

from __future__ import annotations

from typing import Any

from nodeagent.kube import rollout
from nodeagent.kube.client import KubeClient
from nodeagent.kube.lease import lease_namespace
from nodeagent.output import Result

_CLI_RETRIES = 2  # a person at a shell would rather see the error than wait out the agent's retries


def run(settings: Any, args: Any) -> Result:
    namespace = getattr(args, "namespace", None) or lease_namespace()
    with KubeClient.from_settings(settings, retries=_CLI_RETRIES) as api:
        if args.action == "resume":
            existed = rollout.resume(api, namespace)
            text = (f"rollout resumed: cleared configmap {namespace}/{rollout.RECORD_NAME}" if existed
                    else f"nothing to resume: no configmap {namespace}/{rollout.RECORD_NAME}")
            return Result({"namespace": namespace, "resumed": existed}, text)
        states = rollout.status(api, namespace)
    limit = settings.rollout_max_failures
    data = {"namespace": namespace, "rollout_max_failures": limit,
            "desired_states": {key: {"halted": 0 < limit <= len(failures), "failures": failures}
                               for key, failures in states.items()}}
    lines = []
    for key, entry in data["desired_states"].items():
        lines.append(f"desired state {key}: {len(entry['failures'])} failed node(s)"
                     + (" - HALTED" if entry["halted"] else ""))
        lines += [f"  {node}  {f.get('at', '')}  {f.get('reason', '')}" for node, f in sorted(entry["failures"].items())]
    if not lines:
        lines.append(f"no failed converges recorded in {namespace}/{rollout.RECORD_NAME}")
    return Result(data, "\n".join(lines))
