"""The controller's state on Kubernetes: one Secret (it holds SCRAM credentials and ACLs),
migrated from the ConfigMap earlier versions kept it in."""

from __future__ import annotations

import base64
import json

from strata_fixtures import StrataOnKube
from strata_testlib import wait_for

STATE = "strata-controller-state"


def topic(name: str, partitions: int, **spec) -> dict:
    return {
        "apiVersion": "strata.dev/v1alpha1",
        "kind": "Topic",
        "metadata": {"name": name},
        "spec": {"partitions": partitions, "clusterRef": {"name": "strata"}, **spec},
    }


def ready(kube, ns, name) -> bool:
    t = kube.get("topic", name, ns)
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in t.get("status", {}).get("conditions", []))


def get_or_none(kube, kind, name, ns):
    r = kube.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return r.json() if r.ok else None


def secret_state(kube, ns) -> dict | None:
    s = get_or_none(kube, "secret", STATE, ns)
    if s is None or "state.json" not in s.get("data", {}):
        return None
    return json.loads(base64.b64decode(s["data"]["state.json"]))


def holds(state: dict | None, name: str) -> bool:
    return state is not None and name in state["topics"]


def test_the_state_moves_from_the_legacy_configmap_into_a_secret(kube, ns, tmp_path):
    s = StrataOnKube(tmp_path, kube.env["KUBECONFIG"], ns, nodes=1)
    try:
        s.start()
        kube.create(topic("kept", 2, replicationFactor=1), ns)
        wait_for(lambda: ready(kube, ns, "kept"), 30, "Topic Ready")
        topic_id = kube.get("topic", "kept", ns)["status"]["topicId"]
        wait_for(lambda: holds(secret_state(kube, ns), "kept"), 30, "the Secret to hold the topic")
        secret = kube.get("secret", STATE, ns)
        assert secret["type"] == "Opaque"
        assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "strata-operator"
        assert get_or_none(kube, "configmap", STATE, ns) is None, "no ConfigMap is written any more"

        # An installation from before the Secret: the same document in the legacy ConfigMap,
        # no Secret.
        for o in s.operators:
            o.stop()
        doc = base64.b64decode(kube.get("secret", STATE, ns)["data"]["state.json"]).decode()
        kube.kubectl("delete", "secret", STATE, "-n", ns)
        kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": STATE},
                     "data": {"state.json": doc}}, ns)

        s.operators[0].start()
        wait_for(lambda: s.leader() is s.operators[0], 60, "the operator to lead again")
        assert "legacy ConfigMap" in s.operators[0].log_since_start()
        # A change after the migration: committed to the Secret.
        kube.create(topic("after", 1, replicationFactor=1), ns)
        wait_for(lambda: ready(kube, ns, "after"), 30, "the new Topic Ready")

        # The topic was known all along: same id (an empty state would have recreated it).
        t = kube.get("topic", "kept", ns)
        assert t["status"]["topicId"] == topic_id
        assert ready(kube, ns, "kept")
        wait_for(lambda: holds(secret_state(kube, ns), "after"), 30, "the Secret to hold the new topic")
        assert holds(secret_state(kube, ns), "kept")
        wait_for(lambda: get_or_none(kube, "configmap", STATE, ns) is None, 30,
                 "the legacy ConfigMap to be deleted")
        assert "could not be deleted" not in s.operators[0].log_since_start()
    finally:
        print(s.logs())
        s.close()
