"""Cluster resources end to end: a real API server, `strata-operator kubernetes` reconciling a
Cluster into its StatefulSet, Services, ConfigMap and PodDisruptionBudget, and a stand-in kubelet
(cluster_fixtures.Kubelet) running the StatefulSet's pods as strata-node processes from the
args and env the operator wrote. Scaling moves partitions with real data on real nodes."""

from __future__ import annotations

import json

import time

import base64
from collections import Counter

import pytest
from kafka.errors import KafkaConnectionError
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from cluster_fixtures import Kubelet, Operator, flag
from strata_testlib import condition, controller_state, wait_for

API = "strata.dev/v1alpha1"


def cluster(name: str, **spec) -> dict:
    return {"apiVersion": API, "kind": "Cluster", "metadata": {"name": name}, "spec": spec}


def is_true(obj: dict, type_: str) -> bool:
    return (condition(obj, type_) or {}).get("status") == "True"


def get_or_none(kube, kind, name, ns):
    r = kube.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return r.json() if r.ok else None


def test_a_cluster_becomes_a_statefulset_whose_nodes_make_it_ready(kube, ns, operator, kubelet):
    created = kube.create(cluster("strata", nodes=3, topicDefaults={"retention.ms": "86400000"}),
                          ns).json()
    uid = created["metadata"]["uid"]
    # Another Cluster in the same namespace is not served: one controller, one Kafka cluster.
    kube.create(cluster("other", nodes=1), ns)

    sts = wait_for(lambda: get_or_none(kube, "statefulset", "strata", ns), 30, "the StatefulSet")
    objects = {
        "statefulset": sts,
        "service/nodes": kube.get("service", "strata-nodes", ns),
        "service/bootstrap": kube.get("service", "strata-bootstrap", ns),
        "configmap": kube.get("configmap", "strata-config", ns),
        "pdb": kube.get("poddisruptionbudget", "strata", ns),
    }
    for what, obj in objects.items():
        refs = obj["metadata"]["ownerReferences"]
        assert [(r["kind"], r["name"], r["uid"], r["controller"]) for r in refs] == \
            [("Cluster", "strata", uid, True)], what
    for kind, name in [("statefulset", "strata"), ("service", "strata-nodes"),
                       ("service", "strata-bootstrap"), ("configmap", "strata-config"),
                       ("poddisruptionbudget", "strata")]:
        full = kube.kubectl("get", kind, name, "-n", ns, "-o", "json", "--show-managed-fields").json()
        applied = [m for m in full["metadata"]["managedFields"] if m["operation"] == "Apply"]
        assert [m["manager"] for m in applied] == ["strata-operator"], (kind, name)
    spec = sts["spec"]
    assert spec["replicas"] == 3 and spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == "strata-nodes"
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert spec["template"]["spec"]["containers"][0]["image"] == "registry.test/strata-node:e2e"
    assert objects["service/nodes"]["spec"]["clusterIP"] == "None"
    assert objects["pdb"]["spec"]["maxUnavailable"] == 1
    assert objects["configmap"]["data"]["topic-defaults"] == "retention.ms=86400000"

    # The kubelet's part: three pods from the StatefulSet as written.
    assert kubelet.sync() == 3
    for i in range(3):
        args, env = kubelet.specified[i]
        assert flag(args, "--node-id") == str(i)
        assert flag(args, "--controller") == operator.url
        assert flag(args, "--advertise") == f"strata-{i}.strata-nodes.{ns}.svc:9092"
        assert flag(args, "--listen") == "0.0.0.0:9092"
        assert flag(args, "--data-dir") == "/data"
        assert flag(args, "--metrics-listen") == "0.0.0.0:9100"
        assert env["STRATA_TOPIC_DEFAULT"] == "retention.ms=86400000"

    c = wait_for(lambda: (lambda c: c if is_true(c, "Ready") else None)(kube.get("cluster", "strata", ns)),
                 60, "the Cluster to be Ready")
    st = c["status"]
    assert st["readyNodes"] == 3
    assert st["bootstrapAddress"] == f"strata-bootstrap.{ns}.svc:9092"
    assert st["controllerLeader"] == "operator-0"
    assert st["observedGeneration"] == c["metadata"]["generation"]
    assert not is_true(c, "Degraded")
    wait_for(lambda: not is_true(kube.get("cluster", "strata", ns), "Progressing"), 30,
             "Progressing to clear")

    other = wait_for(lambda: (lambda o: o if condition(o, "Ready") else None)(kube.get("cluster", "other", ns)),
                     30, "the other Cluster's status")
    assert condition(other, "Ready")["reason"] == "NotServed"
    assert get_or_none(kube, "statefulset", "other", ns) is None

    events = kube.kubectl("get", "events.events.k8s.io", "-n", ns, "-o", "json").json()["items"]
    created = [e for e in events if e.get("reason") == "Created"
               and e["regarding"]["kind"] == "Cluster" and e["regarding"]["name"] == "strata"]
    assert any("StatefulSet strata" in e.get("note", "") for e in created), \
        [(e.get("reason"), e.get("note")) for e in events]
    assert all(e["reportingController"] == "strata-operator" for e in created)


def test_object_store_keys_reach_the_nodes_only_by_secret_reference(kube, ns, operator):
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-keys"},
                 "data": {"AWS_ACCESS_KEY_ID": base64.b64encode(b"AKIA-test").decode(),
                          "AWS_SECRET_ACCESS_KEY": base64.b64encode(b"very-secret").decode()}}, ns)
    kube.create(cluster("strata", nodes=2, storage={"size": "5Gi", "storageClassName": "fast"},
                        objectStore={"bucket": "tiered", "prefix": "prod",
                                     "endpoint": "http://minio.storage.svc:9000",
                                     "region": "eu-west-1",
                                     "credentialsSecretRef": {"name": "s3-keys"}}), ns)
    sts = wait_for(lambda: get_or_none(kube, "statefulset", "strata", ns), 30, "the StatefulSet")
    text = kube.kubectl("get", "statefulset", "strata", "-n", ns, "-o", "json").out
    assert "very-secret" not in text and "AKIA-test" not in text
    pod = sts["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["STRATA_OBJECT_STORE"]["value"] == "s3://tiered/prod"
    assert env["AWS_ENDPOINT"]["value"] == "http://minio.storage.svc:9000"
    assert env["AWS_ALLOW_HTTP"]["value"] == "true"
    assert env["AWS_REGION"]["value"] == "eu-west-1"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env[name]
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "s3-keys", "key": name,
                                                          "optional": False}
    # The API server took the downward-API label reference for the ordinal.
    assert env["STRATA_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['apps.kubernetes.io/pod-index']"
    sc = pod["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "fast" and claim["resources"]["requests"]["storage"] == "5Gi"


def pvc(name: str, size: str, storage_class: str) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/instance": "strata"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                     "resources": {"requests": {"storage": size}}}}


def test_growing_storage_keeps_the_claim_template_and_grows_the_volumes(kube, ns, operator):
    sc = f"expandable-{ns}"
    kube.create({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": sc},
                 "provisioner": "example.com/none", "allowVolumeExpansion": True}, ns)
    kube.create(cluster("strata", nodes=2, storage={"size": "5Gi", "storageClassName": sc}), ns)
    wait_for(lambda: get_or_none(kube, "statefulset", "strata", ns), 30, "the StatefulSet")
    # What the StatefulSet controller and a provisioner would have made: a bound claim, and
    # one not bound yet (the API server refuses to resize that one).
    for i in range(2):
        kube.create(pvc(f"data-strata-{i}", "5Gi", sc), ns)
    kube.merge_patch("pvc", "data-strata-0", ns, {"status": {"phase": "Bound"}}, subresource="status")
    gen = kube.merge_patch("cluster", "strata", ns, {"spec": {"storage": {"size": "8Gi"}}}).json()["metadata"]["generation"]

    def observed():
        c = kube.get("cluster", "strata", ns)
        return c if c.get("status", {}).get("observedGeneration") == gen else None

    c = wait_for(observed, 30, "the storage change reconciled")
    grown = kube.get("pvc", "data-strata-0", ns)["spec"]["resources"]["requests"]["storage"]
    assert grown == "8Gi"
    assert kube.get("pvc", "data-strata-1", ns)["spec"]["resources"]["requests"]["storage"] == "5Gi"
    d = condition(c, "Degraded")
    assert (d["status"], d["reason"]) == ("True", "VolumeResizeFailed") and "data-strata-1" in d["message"]
    # The claim template is immutable: it stays as it was, and the apply was not refused.
    sts = kube.get("statefulset", "strata", ns)
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "5Gi"


def describe_all(bootstrap) -> dict[tuple[str, int], dict]:
    """Every partition as clients see it: {(topic, partition): {replicas, isr, leader}}.
    A node whose pod just went stays in the metadata until the controller's session timeout
    declares it dead (there is no controlled shutdown yet), and kafka-python's admin client
    raises on a refused connection instead of trying another broker: retry for a while."""
    deadline = time.time() + 30
    while True:
        try:
            return _describe_all(bootstrap)
        except KafkaConnectionError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def _describe_all(bootstrap) -> dict[tuple[str, int], dict]:
    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        out = {}
        for t in a.describe_topics():
            if t["error_code"]:
                continue
            for p in t["partitions"]:
                out[(t["name"], p["partition_index"])] = {
                    "replicas": p["replica_nodes"], "isr": p["isr_nodes"], "leader": p["leader_id"]}
        return out
    finally:
        a.close()


def load(parts: dict) -> tuple[Counter, Counter]:
    replicas, leaders = Counter(), Counter()
    for p in parts.values():
        replicas.update(p["replicas"])
        leaders[p["leader"]] += 1
    return replicas, leaders


def read_all(bootstrap, topic: str, partitions: int, want: int) -> list[bytes]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                      enable_auto_commit=False, consumer_timeout_ms=10000)
    try:
        c.assign([TopicPartition(topic, p) for p in range(partitions)])
        c.seek_to_beginning()
        got = []
        for m in c:
            got.append(m.value)
            if len(got) >= want:
                break
        return got
    finally:
        c.close()


def settled(kube, ns, nodes: int):
    c = kube.get("cluster", "strata", ns)
    ok = is_true(c, "Ready") and c["status"].get("readyNodes") == nodes \
        and not is_true(c, "Progressing")
    return c if ok else None


@pytest.mark.timeout(420)
def test_scaling_moves_partitions_onto_new_nodes_and_drains_before_shrinking(
        kube, ns, operator, kubelet):
    kube.create(cluster("strata", nodes=3), ns)
    wait_for(lambda: get_or_none(kube, "statefulset", "strata", ns), 30, "the StatefulSet")
    kubelet.sync()
    wait_for(lambda: settled(kube, ns, 3), 60, "3 nodes Ready")
    kube.create({"apiVersion": API, "kind": "Topic", "metadata": {"name": "moving"},
                 "spec": {"partitions": 6, "replicationFactor": 2, "clusterRef": {"name": "strata"}}}, ns)
    kube.create({"apiVersion": API, "kind": "Topic", "metadata": {"name": "wide"},
                 "spec": {"partitions": 1, "replicationFactor": 3, "clusterRef": {"name": "strata"}}}, ns)
    wait_for(lambda: all(is_true(kube.get("topic", t, ns), "Ready") for t in ("moving", "wide")),
             30, "the Topics Ready")
    producer = KafkaProducer(bootstrap_servers=kubelet.bootstrap, acks="all", retries=20)
    sent = [b"m%02d" % i for i in range(60)]
    for i, v in enumerate(sent):
        producer.send("moving", v, partition=i % 6)
    producer.flush(30)
    producer.close()

    # Up: the StatefulSet grows at once; once node 3 registers, partitions move onto it.
    kube.merge_patch("cluster", "strata", ns, {"spec": {"nodes": 4}})
    wait_for(lambda: kubelet.statefulset()["spec"]["replicas"] == 4, 30, "4 replicas")
    kubelet.sync()
    wait_for(lambda: settled(kube, ns, 4), 120, "4 nodes Ready and the rebalance done")
    parts = describe_all(kubelet.bootstrap)
    replicas, leaders = load(parts)
    assert set(replicas) == {0, 1, 2, 3}, replicas
    assert max(replicas.values()) - min(replicas.values()) <= 1, replicas
    assert leaders[3] >= 1, leaders
    for key, p in parts.items():
        assert sorted(p["isr"]) == sorted(p["replicas"]), (key, p)
    assert sorted(read_all(kubelet.bootstrap, "moving", 6, 60)) == sent

    # Down: nodes 3 first loses every replica, then the StatefulSet shrinks.
    kube.merge_patch("cluster", "strata", ns, {"spec": {"nodes": 3}})
    wait_for(lambda: kubelet.statefulset()["spec"]["replicas"] == 3, 120, "3 replicas")
    parts = describe_all(kubelet.bootstrap)
    on_3 = [k for k, p in parts.items() if 3 in p["replicas"] or p["leader"] == 3]
    assert not on_3, f"the StatefulSet shrank while node 3 still held {on_3}"
    kubelet.sync()  # pod 3 goes
    wait_for(lambda: settled(kube, ns, 3), 60, "3 nodes Ready")
    # The drained node leaves the controller's metadata once it is gone (no dead registration
    # left behind by a scale-down).
    def registered():
        return sorted(int(n) for n in controller_state(kube, ns)["nodes"])
    wait_for(lambda: registered() == [0, 1, 2], 60, "node 3 to leave the controller's metadata")
    assert not is_true(kube.get("cluster", "strata", ns), "Degraded")
    assert sorted(read_all(kubelet.bootstrap, "moving", 6, 60)) == sent
    reasons = {e.get("reason") for e in
               kube.kubectl("get", "events.events.k8s.io", "-n", ns, "-o", "json").json()["items"]}
    assert {"Rebalancing", "ScalingDown"} <= reasons, reasons

    # A replication factor of 3 cannot fit on 2 nodes: refused whole (nothing moves, the
    # StatefulSet stays), and the status says why.
    before = describe_all(kubelet.bootstrap)
    kube.merge_patch("cluster", "strata", ns, {"spec": {"nodes": 2}})
    c = wait_for(lambda: (lambda c: c if is_true(c, "Degraded") else None)(kube.get("cluster", "strata", ns)),
                 60, "Degraded")
    assert condition(c, "Degraded")["reason"] == "ScaleDownBlocked"
    assert "wide-0" in condition(c, "Degraded")["message"]
    assert condition(c, "Progressing")["reason"] == "ScaleDownBlocked"
    assert kubelet.statefulset()["spec"]["replicas"] == 3
    after = describe_all(kubelet.bootstrap)
    assert {k: p["replicas"] for k, p in after.items()} == {k: p["replicas"] for k, p in before.items()}
    kube.merge_patch("cluster", "strata", ns, {"spec": {"nodes": 3}})
    wait_for(lambda: settled(kube, ns, 3) and not is_true(kube.get("cluster", "strata", ns), "Degraded"),
             60, "back to 3 nodes, healthy")
