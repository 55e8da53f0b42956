"""The committed CRDs on a real kube-apiserver: valid Topics and Clusters are accepted with their
defaults filled in, each invalid create or update is refused with its message (OpenAPI bounds
and the CEL rules), updates that omit optional fields are not mistaken for changes, and
`kubectl get` shows the printer columns.
"""

from __future__ import annotations

import json

import pytest

from conftest import Kube

API = "strata.dev/v1alpha1"


def topic(name: str, **spec) -> dict:
    spec = {"partitions": 3, "clusterRef": {"name": "main"}, **spec}
    spec = {k: v for k, v in spec.items() if v is not None}
    return {"apiVersion": API, "kind": "Topic", "metadata": {"name": name}, "spec": spec}


def cluster(name: str, **spec) -> dict:
    spec = {k: v for k, v in spec.items() if v is not None}
    return {"apiVersion": API, "kind": "Cluster", "metadata": {"name": name}, "spec": spec}


def assert_refused(r, field: str, message: str):
    assert not r.ok, f"accepted, expected a refusal on {field}: {r.out[:300]}"
    assert "is invalid" in r.err, r.err
    assert field in r.err and message in r.err, f"want {field}: {message!r}\ngot: {r.err}"


# ---- creation ---------------------------------------------------------------------------------

LONG_NAME = ".".join(["a" * 63] * 3 + ["a" * 58])  # 250 characters, a valid Kubernetes name

INVALID_CREATES = [
    # (id, object, field, message)
    ("partitions-0", topic("p0", partitions=0),
     "spec.partitions", "should be greater than or equal to 1"),
    ("partitions-over-max", topic("p1", partitions=10001),
     "spec.partitions", "should be less than or equal to 10000"),
    ("partitions-missing", topic("p2", partitions=None),
     "spec.partitions", "Required value"),
    ("replication-0", topic("r0", replicationFactor=0),
     "spec.replicationFactor", "should be greater than or equal to 1"),
    ("cluster-ref-missing", topic("c0", clusterRef=None),
     "spec.clusterRef", "Required value"),
    ("cluster-ref-empty", topic("c1", clusterRef={"name": ""}),
     "spec.clusterRef.name", "should be at least 1 chars long"),
    ("deletion-policy", topic("d0", deletionPolicy="Keep"),
     "spec.deletionPolicy", 'Unsupported value: "Keep"'),
    ("topic-name-dots", topic("n0", topicName=".."),
     "spec.topicName", "topicName cannot be '.' or '..'"),
    ("topic-name-chars", topic("n1", topicName="a/b"),
     "spec.topicName", "should match '^[a-zA-Z0-9._-]+$'"),
    ("topic-name-too-long", topic("n2", topicName="x" * 250),
     "spec.topicName", "may not be more than 249 bytes"),
    ("resource-name-too-long", topic(LONG_NAME),
     "Invalid value", "metadata.name is longer than a Kafka topic name may be (249): set spec.topicName"),
    ("local-bytes-over-total", topic("b0", config={"local.retention.bytes": "2000", "retention.bytes": "1000"}),
     "spec.config", "local.retention.bytes cannot exceed retention.bytes"),
    ("local-bytes-unlimited-total-limited",
     topic("b1", config={"local.retention.bytes": "-1", "retention.bytes": "1000"}),
     "spec.config", "local.retention.bytes cannot exceed retention.bytes"),
    ("local-ms-over-total", topic("m0", config={"local.retention.ms": "86400001", "retention.ms": "86400000"}),
     "spec.config", "local.retention.ms cannot exceed retention.ms"),
    ("retention-not-integer", topic("m1", config={"retention.ms": "7d"}),
     "spec.config", "retention.ms, retention.bytes, local.retention.ms and local.retention.bytes must be integers"),
    ("retention-below-minus-1", topic("m2", config={"retention.bytes": "-2"}),
     "spec.config", "retention.ms and retention.bytes must be -1 (unlimited) or more"),
    ("local-retention-below-minus-2", topic("m3", config={"local.retention.ms": "-3"}),
     "spec.config", "local.retention.ms and local.retention.bytes must be -2 (same as the total retention)"),
    ("config-too-many", topic("m4", config={f"k{i}": "v" for i in range(257)}),
     "spec.config", "must have at most 256 items"),
    ("nodes-0", cluster("k0", nodes=0),
     "spec.nodes", "should be greater than or equal to 1"),
    ("port-out-of-range", cluster("k1", listener={"port": 70000}),
     "spec.listener.port", "should be less than or equal to 65535"),
    ("bucket-missing", cluster("k2", objectStore={"prefix": "p"}),
     "spec.objectStore.bucket", "Required value"),
    ("endpoint-not-url", cluster("k3", objectStore={"bucket": "b", "endpoint": "s3.example.com"}),
     "spec.objectStore.endpoint", "endpoint must be an http:// or https:// URL"),
    ("storage-size-not-quantity", cluster("k4", storage={"size": "lots"}),
     "spec.storage.size", "size must be a quantity, for example 100Gi"),
    ("topic-defaults-local-over-total",
     cluster("k5", topicDefaults={"retention.ms": "1000", "local.retention.ms": "2000"}),
     "spec.topicDefaults", "local.retention.ms cannot exceed retention.ms"),
]


@pytest.mark.parametrize("obj,field,message", [c[1:] for c in INVALID_CREATES],
                         ids=[c[0] for c in INVALID_CREATES])
def test_invalid_create_is_refused(kube: Kube, ns: str, obj, field, message):
    assert_refused(kube.create(obj, ns, check=False), field, message)


VALID_CREATES = [
    ("minimal", topic("orders")),
    ("full", topic("full", replicationFactor=3, deletionPolicy="Retain", topicName="Orders_V2.full",
                   config={"cleanup.policy": "delete", "remote.storage.enable": "true",
                           "retention.ms": "604800000", "local.retention.ms": "3600000",
                           "retention.bytes": "-1", "local.retention.bytes": "1073741824"})),
    ("local-minus-2", topic("lm2", config={"retention.bytes": "1000", "local.retention.bytes": "-2"})),
    ("local-equals-total", topic("leq", config={"retention.ms": "1000", "local.retention.ms": "1000"})),
    ("only-local-set", topic("ol", config={"local.retention.ms": "99999999999"})),
    ("long-name-with-topic-name", topic(LONG_NAME, topicName="short")),
    ("cluster-minimal", cluster("main")),
    ("cluster-full", cluster(
        "full", nodes=5, image="strata/node:0.1.0",
        resources={"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
        storage={"size": "100Gi", "storageClassName": "fast"},
        objectStore={"bucket": "strata", "prefix": "prod", "endpoint": "http://minio:9000",
                     "region": "eu-west-1",
                     "credentialsSecretRef": {"name": "s3", "accessKeyIdKey": "id",
                                              "secretAccessKeyKey": "key"}},
        topicDefaults={"retention.ms": "-1", "local.retention.ms": "86400000"},
        listener={"port": 19092, "advertisedHostTemplate": "{pod}.kafka.example.com",
                  "advertisedPort": 31092, "authentication": "scram-sha-512", "tls": True},
        authorization={"type": "simple", "superUsers": ["User:admin", "User:CN=ops"]})),
    ("user-minimal", {"apiVersion": "strata.dev/v1alpha1", "kind": "User", "metadata": {"name": "a"},
                      "spec": {"authentication": {"type": "tls"}}}),
    ("user-full", {"apiVersion": "strata.dev/v1alpha1", "kind": "User", "metadata": {"name": "b"},
                   "spec": {"authentication": {"type": "scram-sha-512", "password": {
                       "valueFrom": {"secretKeyRef": {"name": "pw", "key": "password"}}}},
                       "authorization": {"type": "simple", "acls": [
                           {"resource": {"type": "topic", "name": "t-", "patternType": "prefix"},
                            "operations": ["Read", "Write", "Describe"], "host": "10.0.0.1",
                            "type": "deny"},
                           {"resource": {"type": "cluster", "name": "kafka-cluster",
                                         "patternType": "literal"},
                            "operations": ["IdempotentWrite"], "host": "*", "type": "allow"}]},
                       "quotas": {"producerByteRate": 1, "consumerByteRate": 2,
                                  "requestPercentage": 3}}}),
]


@pytest.mark.parametrize("obj", [c[1] for c in VALID_CREATES], ids=[c[0] for c in VALID_CREATES])
def test_valid_create_is_accepted(kube: Kube, ns: str, obj):
    got = kube.create(obj, ns).json()
    for k, v in obj["spec"].items():
        if k == "resources":
            continue  # the API server may canonicalize quantities
        assert got["spec"][k] == v, k


def test_omitted_fields_get_their_defaults(kube: Kube, ns: str):
    t = kube.create(topic("orders"), ns).json()
    assert t["spec"] == {"partitions": 3, "clusterRef": {"name": "main"}, "deletionPolicy": "Delete"}
    c = kube.create(cluster("main", objectStore={"bucket": "b", "credentialsSecretRef": {"name": "s3"}}),
                    ns).json()
    assert c["spec"]["nodes"] == 3
    assert c["spec"]["listener"] == {"port": 9092, "authentication": "none", "tls": False}
    assert c["spec"]["storage"] == {"size": "10Gi"}
    assert c["spec"]["objectStore"]["credentialsSecretRef"] == {
        "name": "s3", "accessKeyIdKey": "AWS_ACCESS_KEY_ID", "secretAccessKeyKey": "AWS_SECRET_ACCESS_KEY"}


# ---- updates ----------------------------------------------------------------------------------

BASE_TOPIC = topic("orders", replicationFactor=3, deletionPolicy="Retain", topicName="Orders",
                   config={"retention.ms": "1000"})
BASE_CLUSTER = cluster("main", nodes=3, storage={"size": "10Gi", "storageClassName": "fast"},
                       objectStore={"bucket": "b", "prefix": "p", "credentialsSecretRef": {"name": "s3"}})

INVALID_UPDATES = [
    # (id, base, merge patch, field, message)
    ("partitions-decreased", BASE_TOPIC, {"spec": {"partitions": 2}},
     "spec.partitions", "partitions cannot be decreased"),
    ("cluster-ref-changed", BASE_TOPIC, {"spec": {"clusterRef": {"name": "other"}}},
     "spec.clusterRef", "clusterRef is immutable"),
    ("topic-name-changed", BASE_TOPIC, {"spec": {"topicName": "Orders2"}},
     "spec.topicName", "the Kafka topic name (spec.topicName, or metadata.name when it is omitted) is immutable"),
    ("topic-name-dropped", BASE_TOPIC, {"spec": {"topicName": None}},
     "spec.topicName", "the Kafka topic name (spec.topicName, or metadata.name when it is omitted) is immutable"),
    ("local-retention-over-total", BASE_TOPIC, {"spec": {"config": {"local.retention.ms": "2000"}}},
     "spec.config", "local.retention.ms cannot exceed retention.ms"),
    ("storage-class-changed", BASE_CLUSTER, {"spec": {"storage": {"storageClassName": "slow"}}},
     "spec.storage.storageClassName", "storageClassName is immutable"),
    ("storage-shrunk", BASE_CLUSTER, {"spec": {"storage": {"size": "9Gi"}}},
     "spec.storage.size", "storage.size cannot be decreased: volumes only grow"),
    ("bucket-changed", BASE_CLUSTER, {"spec": {"objectStore": {"bucket": "c"}}},
     "spec.objectStore", "objectStore.bucket and objectStore.prefix are immutable"),
    ("prefix-dropped", BASE_CLUSTER, {"spec": {"objectStore": {"prefix": None}}},
     "spec.objectStore", "objectStore.bucket and objectStore.prefix are immutable"),
]


@pytest.mark.parametrize("base,patch,field,message", [c[1:] for c in INVALID_UPDATES],
                         ids=[c[0] for c in INVALID_UPDATES])
def test_invalid_update_is_refused(kube: Kube, ns: str, base, patch, field, message):
    kube.create(base, ns)
    kind, name = base["kind"].lower(), base["metadata"]["name"]
    assert_refused(kube.merge_patch(kind, name, ns, patch, check=False), field, message)
    assert kube.get(kind, name, ns)["spec"] == kube_defaults(base)["spec"]


def kube_defaults(obj: dict) -> dict:
    """`obj` as the API server stores it (the defaults BASE_* rely on)."""
    obj = json.loads(json.dumps(obj))
    if obj["kind"] == "Cluster":
        listener = obj["spec"].setdefault("listener", {"port": 9092})
        listener.setdefault("authentication", "none")
        listener.setdefault("tls", False)
        ref = obj["spec"].get("objectStore", {}).get("credentialsSecretRef")
        if ref:
            ref.setdefault("accessKeyIdKey", "AWS_ACCESS_KEY_ID")
            ref.setdefault("secretAccessKeyKey", "AWS_SECRET_ACCESS_KEY")
    return obj


VALID_UPDATES = [
    ("partitions-increased", BASE_TOPIC, {"spec": {"partitions": 6}}),
    ("partitions-unchanged-config-changed", BASE_TOPIC, {"spec": {"config": {"retention.ms": "5000",
                                                                            "local.retention.ms": "-2"}}}),
    ("optional-fields-dropped", BASE_TOPIC,
     {"spec": {"replicationFactor": None, "config": None, "deletionPolicy": None}}),
    ("cluster-scaled-and-grown", BASE_CLUSTER,
     {"spec": {"nodes": 5, "storage": {"size": "0.5Ti"},
               "objectStore": {"endpoint": "https://s3.example.com", "credentialsSecretRef": None}}}),
    ("storage-class-dropped", BASE_CLUSTER, {"spec": {"storage": {"storageClassName": None}}}),
]


@pytest.mark.parametrize("base,patch", [c[1:] for c in VALID_UPDATES], ids=[c[0] for c in VALID_UPDATES])
def test_valid_update_is_accepted(kube: Kube, ns: str, base, patch):
    kube.create(base, ns)
    kind, name = base["kind"].lower(), base["metadata"]["name"]
    kube.merge_patch(kind, name, ns, patch)


def test_replace_omitting_optional_fields_is_not_a_change(kube: Kube, ns: str):
    """A PUT of a spec without the optional fields set before (topicName equal to the resource
    name, so the Kafka name stays the same) is accepted; partitions are required and kept."""
    kube.create(topic("orders", replicationFactor=3, deletionPolicy="Retain", topicName="orders",
                      config={"retention.ms": "1000"}), ns)
    current = kube.get("topic", "orders", ns)
    minimal = topic("orders")
    minimal["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    got = kube.replace(minimal, ns).json()
    assert got["spec"] == {"partitions": 3, "clusterRef": {"name": "main"}, "deletionPolicy": "Delete"}


def test_server_side_apply(kube: Kube, ns: str):
    """kubectl apply --server-side: re-applying without optional fields is fine, lowering
    partitions is refused."""
    def apply(obj):
        return kube.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=json.dumps(obj), check=False)

    assert apply(topic("orders", partitions=4, config={"retention.ms": "1000"})).ok
    assert apply(topic("orders", partitions=4)).ok
    assert_refused(apply(topic("orders", partitions=3)), "spec.partitions", "partitions cannot be decreased")
    assert kube.get("topic", "orders", ns)["spec"]["partitions"] == 4


def test_status_is_a_subresource(kube: Kube, ns: str):
    """Status writes go through /status (spec untouched), spec writes never change status."""
    kube.create(topic("orders"), ns)
    status = {"observedGeneration": 1, "partitions": 3, "replicationFactor": 3,
              "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled",
                              "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    got = kube.merge_patch("topic", "orders", ns, {"status": status, "spec": {"partitions": 1}},
                           subresource="status").json()
    assert got["status"]["partitions"] == 3
    assert got["spec"]["partitions"] == 3
    got = kube.merge_patch("topic", "orders", ns, {"status": {"partitions": 99}}).json()
    assert got["status"]["partitions"] == 3


# ---- kubectl get ------------------------------------------------------------------------------

def table(kube: Kube, *args: str) -> list[dict]:
    lines = kube.kubectl("get", *args).out.strip().splitlines()
    header = lines[0].split()
    return [dict(zip(header, line.split())) for line in lines[1:]]


def test_printer_columns(kube: Kube, ns: str):
    kube.create(topic("orders", partitions=12), ns)
    kube.merge_patch("topic", "orders", ns, subresource="status", patch={"status": {
        "replicationFactor": 3, "localBytes": 1048576, "remoteBytes": 73400320,
        "underReplicatedPartitions": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "ok",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    [row] = table(kube, "topics", "-n", ns)
    assert list(row) == ["NAME", "PARTITIONS", "REPLICATION", "READY", "LOCAL", "REMOTE", "AGE"]
    assert (row["NAME"], row["PARTITIONS"], row["REPLICATION"], row["READY"], row["LOCAL"], row["REMOTE"]) == (
        "orders", "12", "3", "True", "1048576", "73400320")
    [wide] = table(kube, "stt", "-n", ns, "-o", "wide")
    assert (wide["CLUSTER"], wide["UNDER-REPLICATED"]) == ("main", "1")

    kube.create(cluster("main", nodes=3), ns)
    kube.merge_patch("cluster", "main", ns, subresource="status", patch={"status": {
        "readyNodes": 2, "bootstrapAddress": "main-bootstrap.t.svc:9092",
        "controllerLeader": "strata-operator-0"}})
    [row] = table(kube, "clusters.strata.dev", "-n", ns)
    assert list(row) == ["NAME", "NODES", "READY", "BOOTSTRAP", "AGE"]
    assert (row["NAME"], row["NODES"], row["READY"], row["BOOTSTRAP"]) == (
        "main", "3", "2", "main-bootstrap.t.svc:9092")
    [wide] = table(kube, "stc", "-n", ns, "-o", "wide")
    assert wide["CONTROLLER"] == "strata-operator-0"

    # The category lists both kinds.
    names = kube.kubectl("get", "strata", "-n", ns, "-o", "name").out.split()
    assert sorted(names) == ["cluster.strata.dev/main", "topic.strata.dev/orders"]
