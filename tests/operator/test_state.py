"""The controller's state on Kubernetes: a log of changes with snapshots in Secrets (they hold
SCRAM credentials and ACLs), converted from the single document earlier versions kept in one
Secret or, before that, in a ConfigMap."""

from __future__ import annotations

import base64
import json

from strata_fixtures import StrataOnKube
from strata_testlib import controller_state, wait_for

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


def holds(state: dict | None, name: str) -> bool:
    return state is not None and name in state["topics"]


def state_objects(kube, ns) -> dict[str, dict]:
    items = kube.kubectl("get", "secret", "-n", ns, "-l", f"strata.dev/controller-state={STATE}",
                         "-o", "json").json()["items"]
    return {o["metadata"]["name"]: o for o in items}


def size(obj: dict) -> int:
    return sum(len(base64.b64decode(v)) for v in obj.get("data", {}).values())


def test_a_change_writes_one_small_log_entry(kube, ns, tmp_path):
    s = StrataOnKube(tmp_path, kube.env["KUBECONFIG"], ns, nodes=1)
    try:
        s.start()
        kube.create(topic("first", 2, replicationFactor=1), ns)
        wait_for(lambda: ready(kube, ns, "first"), 30, "Topic Ready")
        wait_for(lambda: holds(controller_state(kube, ns), "first"), 30, "the state to hold it")
        before = {n: o["metadata"]["resourceVersion"] for n, o in state_objects(kube, ns).items()}
        head = kube.get("secret", STATE, ns)
        assert "manifest.json" in head["data"] and "state.json" not in head["data"]
        kube.create(topic("second", 3, replicationFactor=1), ns)
        wait_for(lambda: ready(kube, ns, "second"), 30, "Topic Ready")
        state = controller_state(kube, ns)
        assert holds(state, "second") and len(state["topics"]["second"]["partitions"]) == 3
        after = state_objects(kube, ns)
        written = [n for n, o in after.items() if before.get(n) != o["metadata"]["resourceVersion"]]
        # One commit (or a few: the node's ISR and leader changes may follow), each one log
        # slot of a few hundred bytes; no snapshot and no head rewrite.
        assert written and all("-log-" in n for n in written), written
        assert all(size(after[n]) < 4096 for n in written), {n: size(after[n]) for n in written}
        for o in after.values():
            assert o["type"] == "Opaque"
            assert o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "strata-operator"

        # The other replica takes over from the log: same topics, same ids.
        ids = {t: kube.get("topic", t, ns)["status"]["topicId"] for t in ("first", "second")}
        s.leader().kill()
        wait_for(lambda: s.leader() is not None, 60, "the other operator to lead")
        kube.create(topic("third", 1, replicationFactor=1), ns)
        wait_for(lambda: ready(kube, ns, "third"), 60, "Topic Ready after the takeover")
        for t, topic_id in ids.items():
            assert kube.get("topic", t, ns)["status"]["topicId"] == topic_id
        assert holds(controller_state(kube, ns), "third")
    finally:
        print(s.logs())
        s.close()


def back_to_one_document(s: StrataOnKube, kube, ns) -> str:
    """Stops the operators and removes every object of the store; returns the whole state as
    one document, the form earlier versions stored, for the test to put back in their layout."""
    for o in s.operators:
        o.stop()
    state = controller_state(kube, ns)
    assert state is not None
    for name in state_objects(kube, ns):
        kube.kubectl("delete", "secret", name, "-n", ns)
    return json.dumps(state)


def test_the_single_document_of_earlier_versions_converts_to_the_log(kube, ns, tmp_path):
    s = StrataOnKube(tmp_path, kube.env["KUBECONFIG"], ns, nodes=1)
    try:
        s.start()
        kube.create(topic("kept", 2, replicationFactor=1), ns)
        wait_for(lambda: ready(kube, ns, "kept"), 30, "Topic Ready")
        topic_id = kube.get("topic", "kept", ns)["status"]["topicId"]
        wait_for(lambda: holds(controller_state(kube, ns), "kept"), 30, "the state to hold it")
        doc = back_to_one_document(s, kube, ns)
        # The previous version's layout: one Secret, the whole document under state.json.
        kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": STATE},
                     "type": "Opaque",
                     "data": {"state.json": base64.b64encode(doc.encode()).decode()}}, ns)
        s.operators[0].start()
        wait_for(lambda: s.leader() is s.operators[0], 60, "the operator to lead again")
        assert "converting the controller state of an earlier version" in s.operators[0].log_since_start()
        kube.create(topic("after", 1, replicationFactor=1), ns)
        wait_for(lambda: ready(kube, ns, "after"), 30, "the new Topic Ready")
        assert kube.get("topic", "kept", ns)["status"]["topicId"] == topic_id
        head = kube.get("secret", STATE, ns)
        assert "manifest.json" in head["data"] and "state.json" not in head["data"]
        state = controller_state(kube, ns)
        assert holds(state, "kept") and holds(state, "after")
    finally:
        print(s.logs())
        s.close()


def test_the_state_moves_from_the_legacy_configmap_into_a_secret(kube, ns, tmp_path):
    s = StrataOnKube(tmp_path, kube.env["KUBECONFIG"], ns, nodes=1)
    try:
        s.start()
        kube.create(topic("kept", 2, replicationFactor=1), ns)
        wait_for(lambda: ready(kube, ns, "kept"), 30, "Topic Ready")
        topic_id = kube.get("topic", "kept", ns)["status"]["topicId"]
        wait_for(lambda: holds(controller_state(kube, ns), "kept"), 30, "the Secrets to hold the topic")
        secret = kube.get("secret", STATE, ns)
        assert secret["type"] == "Opaque"
        assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "strata-operator"
        assert get_or_none(kube, "configmap", STATE, ns) is None, "no ConfigMap is written any more"

        # An installation from before the Secret: the same document in the legacy ConfigMap,
        # no Secret.
        doc = back_to_one_document(s, kube, ns)
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
        wait_for(lambda: holds(controller_state(kube, ns), "after"), 30, "the Secrets to hold the new topic")
        assert holds(controller_state(kube, ns), "kept")
        wait_for(lambda: get_or_none(kube, "configmap", STATE, ns) is None, 30,
                 "the legacy ConfigMap to be deleted")
        assert "could not be deleted" not in s.operators[0].log_since_start()
    finally:
        print(s.logs())
        s.close()
