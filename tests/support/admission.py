"""A stand-in for the API server's ValidatingAdmissionPolicy plugin: evaluates a policy's real CEL.

No kube-apiserver can be had here (tests/support/fake_apiserver.py is a stand-in too), so this
module does what the API server does for one request, with a real CEL implementation (PyPI
`common-expression-language`): match the request against `matchConstraints.resourceRules`,
evaluate `matchConditions` (all true, or the policy does not apply), then `variables` in order,
then every validation; an evaluation error counts as a failure (`failurePolicy: Fail`).

What it does not model (said here so no test relies on it): CEL cost limits, the API server's
typed `object` (here every object is a plain map, as the API server's own runtime sees
unstructured objects), `params`/`paramRef`, namespace/object selectors, `authorizer`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import cel

NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"


@dataclass
class Decision:
    applies: bool  # False: matchConstraints or matchConditions did not select the request
    failures: list[str] = field(default_factory=list)  # messages of the validations that failed

    @property
    def allowed(self) -> bool:
        return not self.failures


def request(user: str, *, node_name: str | None = None, extra: Mapping[str, list[str]] | None = None,
            name: str = "", resource: str = "nodes", sub_resource: str = "", operation: str = "UPDATE",
            group: str = "", version: str = "v1", kind: str = "Node") -> dict[str, Any]:
    """An admission.k8s.io/v1 AdmissionRequest as the API server builds it for a Node PATCH.

    `node_name` goes into userInfo.extra the way a pod-bound service-account token's node does
    (ServiceAccountTokenPodNodeInfo); `extra` is empty and so omitted when neither is given.
    """
    extra = dict(extra or {})
    if node_name is not None:
        extra[NODE_NAME_EXTRA] = [node_name]
    user_info: dict[str, Any] = {"username": user, "uid": str(uuid.uuid4()),
                                 "groups": ["system:authenticated"]}
    if user.startswith("system:serviceaccount:"):
        namespace = user.split(":")[2]
        user_info["groups"] = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                               "system:authenticated"]
    if extra:
        user_info["extra"] = extra
    gvk = {"group": group, "version": version, "kind": kind}
    gvr = {"group": group, "version": version, "resource": resource}
    return {"uid": str(uuid.uuid4()), "kind": gvk, "resource": gvr, "subResource": sub_resource,
            "requestKind": gvk, "requestResource": gvr, "name": name, "namespace": "",
            "operation": operation, "userInfo": user_info, "dryRun": False}


def _rule_matches(rule: Mapping[str, Any], req: Mapping[str, Any]) -> bool:
    res = req["resource"]
    full = res["resource"] + (f"/{req['subResource']}" if req["subResource"] else "")
    return (any(g in ("*", res["group"]) for g in rule.get("apiGroups", []))
            and any(v in ("*", res["version"]) for v in rule.get("apiVersions", []))
            and any(o in ("*", req["operation"]) for o in rule.get("operations", []))
            and any(r in ("*", full) for r in rule.get("resources", [])))


def _eval(expr: str, ctx: Mapping[str, Any]) -> tuple[Any, str | None]:
    try:
        return cel.evaluate(expr, dict(ctx)), None
    except Exception as exc:  # noqa: BLE001 -- any CEL error is a failure under failurePolicy Fail
        return None, f"{type(exc).__name__}: {exc}"


def evaluate(policy: Mapping[str, Any], req: Mapping[str, Any], obj: Any, old: Any) -> Decision:
    """The policy's decision on one request (`obj`/`old` are the Node after/before the patch)."""
    spec = policy["spec"]
    rules = spec["matchConstraints"]["resourceRules"]
    if not any(_rule_matches(rule, req) for rule in rules):
        return Decision(applies=False)
    ctx: dict[str, Any] = {"object": obj, "oldObject": old, "request": req, "params": None}
    for cond in spec.get("matchConditions", []):
        value, error = _eval(cond["expression"], ctx)
        if error:
            return Decision(True, [f"matchCondition {cond['name']}: {error}"])
        if value is not True:
            return Decision(applies=False)
    variables: dict[str, Any] = {}
    for var in spec.get("variables", []):
        value, error = _eval(var["expression"], {**ctx, "variables": variables})
        if error:
            return Decision(True, [f"variable {var['name']}: {error}"])
        variables[var["name"]] = value
    failures = []
    for rule in spec["validations"]:
        value, error = _eval(rule["expression"], {**ctx, "variables": variables})
        if error or value is not True:
            failures.append(rule.get("message", rule["expression"]) + (f" ({error})" if error else ""))
    return Decision(True, failures)


def standin_hook(policy: Mapping[str, Any], binding: str,
                 identities: Mapping[str, tuple[str, str | None]]) -> Callable[..., str | None]:
    """An `admission` callable for tests/support/fake_apiserver.py: the stand-in's user (e.g.
    `token-user-0`) maps to (service-account username, node named in its token or None)."""
    def admit(user: str, collection: str, name: str, new: dict, old: dict) -> str | None:
        username, node_name = identities.get(user, (user, None))
        resource = collection.rsplit("/", 1)[-1]
        req = request(username, node_name=node_name, name=name, resource=resource,
                      kind=str(new.get("kind") or resource))
        decision = evaluate(policy, req, new, old)
        if decision.allowed:
            return None
        return (f"ValidatingAdmissionPolicy '{policy['metadata']['name']}' with binding '{binding}' "
                f"denied request: {decision.failures[0]}")
    return admit
