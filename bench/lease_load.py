#!/usr/bin/env python3
"""API load of a rollout: requests per node while N agents take turns through the restart slots.

    python3 bench/lease_load.py [--agents 200] [--slots 3] [--restart 0.2] [--poll 0.1] [--jitter 0.05]

Runs N agents (threads, one client and TLS connection each) against the loopback STAND-IN API
server (tests/support/fake_apiserver.py; no kube-apiserver exists here) with whatever
`nodeagent` is first on sys.path, so the same script measures another checkout's RestartSlots:

    mkdir /tmp/old && ln -s /path/to/old/checkout/nodeagent /tmp/old/nodeagent
    PYTHONPATH=/tmp/old:. python3 bench/lease_load.py     (and PYTHONPATH=. for this checkout:
                                                           an editable install elsewhere would win)

Time is scaled: the defaults are a 10 s restart + health check and the 5 s poll of the
production settings, divided by 50. The request counts depend on the restart/poll ratio, not on
the scale; the machine's load stretches the rollout's duration, so compare counts, not seconds.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: another checkout wins

from nodeagent.kube.client import KubeClient  # noqa: E402
from nodeagent.kube.credentials import from_kubeconfig  # noqa: E402
from nodeagent.kube.lease import RestartSlots  # noqa: E402
from tests.support.fake_apiserver import TOKEN, FakeApiServer, Pki, kubeconfig_text  # noqa: E402


def run(agents: int, slots: int, restart: float, poll: float, jitter: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        pki = Pki.create(Path(tmp) / "pki")
        with FakeApiServer(pki, tokens={TOKEN}) as server:
            kc = Path(tmp) / "kubeconfig"
            kc.write_text(kubeconfig_text(server.url, user={"token": TOKEN},
                                          cluster_extra={"certificate-authority": str(pki.ca_cert)}))
            extra = {"claim_jitter": jitter} if "claim_jitter" in inspect.signature(RestartSlots).parameters else {}
            per_node = [0] * agents
            errors: list[str] = []
            barrier = threading.Barrier(agents)

            def agent(i: int) -> None:
                try:
                    with KubeClient(from_kubeconfig(str(kc))) as api:
                        barrier.wait()
                        with RestartSlots(api, f"node-{i:03d}", slots=slots, namespace="nodeagent",
                                          poll=poll, **extra).hold(timeout=3600):
                            time.sleep(restart)
                        per_node[i] = api.requests_made
                except Exception as exc:  # reported below
                    errors.append(f"node-{i}: {exc!r}")

            threads = [threading.Thread(target=agent, args=(i,)) for i in range(agents)]
            began = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = time.monotonic() - began
            return {
                "nodeagent": str(Path(inspect.getfile(RestartSlots)).parents[2]),
                "agents": agents, "slots": slots, "restart_s": restart, "poll_s": poll, **extra,
                "rollout_s": round(took, 1), "errors": errors[:5],
                "lease_requests_per_node_mean": round(server.count(path_contains="/leases") / agents, 1),
                "per_node_median": statistics.median(per_node), "per_node_max": max(per_node),
                "lists": sum(1 for r in server.records if r.method == "GET" and "/leases" in r.path and not r.watch),
                "watches": sum(1 for r in server.records if r.watch),
                "conflicts_409": server.count(status=409),
                "max_holders": server.max_lease_holders,
            }


def main() -> int:
    from nodeagent import logsetup

    logsetup.configure("json", -2)  # warnings and errors only: a slot log line per handoff drowns the result
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--slots", type=int, default=3)
    ap.add_argument("--restart", type=float, default=0.2)
    ap.add_argument("--poll", type=float, default=0.1)
    ap.add_argument("--jitter", type=float, default=0.05)
    a = ap.parse_args()
    print(json.dumps(run(a.agents, a.slots, a.restart, a.poll, a.jitter), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
