"""Strata on a real one-node Kubernetes cluster (tests/testbed/k8s.sh): the chart installed with
`helm install`, the operator and the nodes running as pods from the images the Dockerfile
makes, clients reaching the Cluster through its bootstrap Service's DNS name.

The tests run in file order and build on each other (one release, one Cluster)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import yaml

from conftest import (CHART, NAMESPACE, RELEASE, Kube, condition, pod_ready, split_ref, timing,
                      wait_for)
from strata_testlib import free_port

CLUSTER = "strata"
NODE_SELECTOR = f"app.kubernetes.io/instance={CLUSTER},app.kubernetes.io/component=node"
OPERATOR_SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"
LEASE = f"{RELEASE}-operator"


class State:
    t_install = 0.0
    bootstrap = ""
    node_image = ""


def values(images: dict, **extra) -> list[str]:
    op_repo, op_tag = split_ref(images["operator"])
    node_repo, node_tag = split_ref(images["node"])
    sets = {
        "image.repository": op_repo, "image.tag": op_tag, "image.pullPolicy": "IfNotPresent",
        "nodeImage.repository": node_repo, "nodeImage.tag": node_tag,
        "operator.logFormat": "text",
        # Fail over sooner than the defaults: a deleted pod is declared dead within 6 s anyway.
        "operator.leaseDurationMs": 10000,
    }
    sets.update(extra)
    out = []
    for k, v in sets.items():
        out += ["--set-string" if isinstance(v, str) else "--set", f"{k}={v}"]
    return out


@pytest.fixture(scope="module")
def release(kube: Kube, images):
    State.node_image = images["node"]
    if kube.helm("status", RELEASE, "-n", NAMESPACE, check=False).rc == 0:
        kube.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait")
    State.t_install = time.monotonic()
    r = kube.helm("install", RELEASE, str(CHART), "-n", NAMESPACE, *values(images))
    # A Cluster left by an earlier run (K8S_KEEP=1, pytest -k): its clients' address.
    State.bootstrap = ((cluster(kube) or {}).get("status") or {}).get("bootstrapAddress") or ""
    yield r


def node_pods(kube: Kube) -> list[dict]:
    return sorted(kube.pods(NODE_SELECTOR), key=lambda p: p["metadata"]["name"])


def ready_node_pods(kube: Kube, n: int):
    pods = [p for p in node_pods(kube) if pod_ready(p)]
    return pods if len(pods) == n and len(node_pods(kube)) == n else None


def cluster(kube: Kube) -> dict | None:
    return kube.get("cluster.strata.dev", CLUSTER)


def nodes_updated(kube: Kube, n: int) -> dict | None:
    """The node StatefulSet when its template is taken, all n pods are Ready at its update
    revision (the operator rolls them: the update strategy is OnDelete, which never moves
    currentRevision) and the Cluster shows no roll."""
    sts = kube.get("statefulset", CLUSTER)
    st = (sts or {}).get("status", {})
    if not sts or st.get("observedGeneration") != sts["metadata"]["generation"]:
        return None
    if st.get("updatedReplicas") != n:
        return None
    pods = ready_node_pods(kube, n)
    if not pods or any(p["metadata"]["labels"].get("controller-revision-hash")
                       != st.get("updateRevision") for p in pods):
        return None
    if ((cluster(kube) or {}).get("status") or {}).get("roll"):
        return None
    return sts


def cluster_ready(kube: Kube, nodes: int) -> dict | None:
    c = cluster(kube)
    if not c or (condition(c, "Ready") or {}).get("status") != "True":
        return None
    if c.get("status", {}).get("readyNodes") != nodes:
        return None
    if c.get("status", {}).get("observedGeneration") != c["metadata"]["generation"]:
        return None
    return c


def topic_ready(kube: Kube, name: str) -> dict | None:
    t = kube.get("topic.strata.dev", name)
    return t if (condition(t, "Ready") or {}).get("status") == "True" else None


def topic_manifest(name: str, topic_name: str, partitions: int = 6, rf: int = 3,
                   config: dict | None = None) -> dict:
    return {
        "apiVersion": "strata.dev/v1alpha1", "kind": "Topic",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"clusterRef": {"name": CLUSTER}, "topicName": topic_name,
                 "partitions": partitions, "replicationFactor": rf,
                 "config": {"min.insync.replicas": "2", **(config or {})}},
    }


def kafka_metadata(topic: str) -> dict[int, tuple[list[int], list[int], int]]:
    """{partition: (replicas, isr, leader)} from the cluster, through the bootstrap Service."""
    from confluent_kafka.admin import AdminClient
    a = AdminClient({"bootstrap.servers": State.bootstrap, "socket.connection.setup.timeout.ms": 5000})
    md = a.list_topics(topic, timeout=15)
    t = md.topics[topic]
    if t.error is not None:
        raise RuntimeError(str(t.error))
    return {p: (list(pm.replicas), list(pm.isrs), pm.leader) for p, pm in t.partitions.items()}


def all_in_sync(topic: str, rf: int = 3):
    try:
        md = kafka_metadata(topic)
    except Exception:
        return None
    ok = md and all(len(r) == rf and sorted(i) == sorted(r) and l >= 0 for r, i, l in md.values())
    return md if ok else None


# ---- 1. the operator ------------------------------------------------------------------------

def test_operator_pods_run_and_one_holds_the_lease(kube: Kube, release):
    assert "STATUS: deployed" in release.out, release.text
    t0 = time.monotonic()

    def two_ready():
        pods = [p for p in kube.pods(OPERATOR_SELECTOR) if pod_ready(p)]
        return pods if len(pods) == 2 else None
    pods = wait_for(two_ready, 180, "two operator pods Running and Ready")
    names = {p["metadata"]["name"] for p in pods}

    def holder():
        lease = kube.get("lease", LEASE)
        h = ((lease or {}).get("spec") or {}).get("holderIdentity")
        return h if h in names else None
    h = wait_for(holder, 60, "one operator pod holding the Lease")
    timing("helm install -> operator pods Ready and leading", time.monotonic() - t0)
    assert h in names


# ---- 2. a Cluster of three nodes ------------------------------------------------------------

def test_cluster_of_three_nodes_runs(kube: Kube, release):
    kube.apply({
        "apiVersion": "strata.dev/v1alpha1", "kind": "Cluster",
        "metadata": {"name": CLUSTER, "namespace": NAMESPACE},
        "spec": {"nodes": 3, "storage": {"size": "1Gi"},
                 "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}},
    })
    t0 = time.monotonic()
    pods = wait_for(lambda: ready_node_pods(kube, 3), 300, "3 node pods Running and Ready")
    c = wait_for(lambda: cluster_ready(kube, 3), 180, "Cluster Ready with 3 ready nodes")
    timing("Cluster applied -> 3 node pods Ready, Cluster Ready", time.monotonic() - t0)
    for p in pods:
        (claim,) = [v["persistentVolumeClaim"]["claimName"] for v in p["spec"]["volumes"]
                    if "persistentVolumeClaim" in v]
        pvc = kube.get("pvc", claim)
        assert pvc["status"]["phase"] == "Bound", pvc["status"]
    State.bootstrap = c["status"]["bootstrapAddress"]
    assert ".svc" in State.bootstrap, State.bootstrap
    out = kube.k("get", "strata").out
    line = next(l for l in out.splitlines() if l.startswith(f"{CLUSTER} ") or f"/{CLUSTER} " in l)
    assert " 3 " in line and State.bootstrap in line, out


# ---- 3. a Topic and the origin example ------------------------------------------------------

def test_topic_is_ready_and_the_origin_example_runs(kube: Kube, release):
    kube.apply(topic_manifest("test-topic", "test_topic"))
    t0 = time.monotonic()
    t = wait_for(lambda: topic_ready(kube, "test-topic"), 120, "Topic test-topic Ready")
    timing("Topic applied -> Ready", time.monotonic() - t0)
    timing("helm install -> Topic Ready (with Cluster)", time.monotonic() - State.t_install)
    assert t["status"]["replicationFactor"] == 3
    wait_for(lambda: all_in_sync("test_topic"), 60,
             "every test_topic partition with 3 in-sync replicas")

    from kafka import KafkaConsumer, KafkaProducer
    # The origin document's producer, bootstrapping from the Service's DNS name.
    producer = KafkaProducer(bootstrap_servers=State.bootstrap)
    for i in range(10):
        producer.send('test_topic', b'message%d' % i)
    producer.flush()
    producer.close()

    consumer = KafkaConsumer("test_topic", bootstrap_servers=State.bootstrap, group_id="test_group",
                             auto_offset_reset="earliest", consumer_timeout_ms=30000)
    got = []
    for message in consumer:
        got.append(message.value)
        if len(got) == 10:
            break
    consumer.commit()
    consumer.close()
    assert sorted(got) == sorted(b"message%d" % i for i in range(10))

    # An idempotent acks=all producer: every record acknowledged, then read back once each.
    producer = KafkaProducer(bootstrap_servers=State.bootstrap, acks="all", enable_idempotence=True)
    futures = [producer.send("test_topic", b"idem%04d" % i) for i in range(500)]
    producer.flush()
    metas = [f.get(timeout=30) for f in futures]
    producer.close()
    assert len({(m.partition, m.offset) for m in metas}) == 500
    consumer = KafkaConsumer("test_topic", bootstrap_servers=State.bootstrap, group_id="idem-check",
                             auto_offset_reset="earliest", consumer_timeout_ms=15000)
    seen = [m.value for m in consumer if m.value.startswith(b"idem")]
    consumer.close()
    assert sorted(seen) == sorted(b"idem%04d" % i for i in range(500))


def check_exactly_once(load) -> dict:
    """tests/cluster/load.py's check of every partition (each acknowledged record read back once,
    at its acknowledged offset, in order, nothing else), except that an acknowledgement without
    an offset is checked by value only. librdkafka reports some records delivered with no
    offset; seen once during a rolling change, for a record that was in the log once (the
    likely cause, not confirmed: a retried batch answered as a duplicate without its original
    offset). Such records must still be in the log exactly once, and they are counted."""
    from load import check_all, read_partition
    no_offset = {p: [v for v, o in acked.items() if o is None or o < 0]
                 for p, acked in load.acked.items()}
    for p, vs in no_offset.items():
        for v in vs:
            del load.acked[p][v]
    counts = check_all(load)  # duplicates of any value fail here
    for p, vs in no_offset.items():
        if vs:
            records, _, _ = read_partition(load.bootstrap, load.topic, p)
            present = set(records.values())
            missing = [v for v in vs if v not in present]
            assert not missing, f"{load.topic}/{p}: acked (no offset) but missing: {missing[:5]}"
    n = sum(len(vs) for vs in no_offset.values())
    if n:
        print(f"{load.topic}: {n} acknowledgement(s) without an offset, each record found "
              f"exactly once")
        timing(f"{load.topic}: acks without an offset (count, not seconds)", n)
    return counts


# ---- 4. a node pod deleted under load -------------------------------------------------------

def load_topic(kube: Kube, name: str) -> str:
    # A fresh topic per run: a rerun on a kept cluster (K8S_KEEP=1) must not read old records.
    name = f"{name}-{int(time.time()) % 100000}"
    kube.apply(topic_manifest(name, name))
    wait_for(lambda: topic_ready(kube, name), 120, f"Topic {name} Ready")
    wait_for(lambda: all_in_sync(name), 60, f"every {name} partition in sync")
    return name


def test_deleted_node_pod_comes_back_with_its_data(kube: Kube, release):
    from load import Load
    topic = load_topic(kube, "load-delete")
    victim = "strata-1"
    old = kube.get("pod", victim)
    old_uid = old["metadata"]["uid"]
    pvc_uid = kube.get("pvc", f"data-{victim}")["metadata"]["uid"]
    with Load(State.bootstrap, topic, list(range(6)), pace=0.004) as load:
        load.wait_acks_after(0, 300, timeout=60, what="before the deletion")
        t0 = time.monotonic()
        kube.k("delete", "pod", victim, "--wait=false")

        def back():
            p = kube.get("pod", victim)
            return p if p and p["metadata"]["uid"] != old_uid and pod_ready(p) else None
        wait_for(back, 240, f"{victim} recreated and Ready")
        t_ready = time.monotonic() - t0
        wait_for(lambda: all_in_sync(topic), 240, f"{victim} back in every ISR")
        t_isr = time.monotonic() - t0
        load.wait_acks_after(time.monotonic(), 300, timeout=60, what="after the rejoin")
    load.assert_clean()
    assert kube.get("pvc", f"data-{victim}")["metadata"]["uid"] == pvc_uid, "a new volume"
    counts = check_exactly_once(load)
    timing("node pod deleted -> recreated and Ready", t_ready)
    timing("node pod deleted -> back in every ISR", t_isr)
    assert sum(c["acked"] for c in counts.values()) > 600, counts


# ---- 6. scale 3 -> 4 -> 3 under load --------------------------------------------------------

def all_partitions() -> dict[tuple[str, int], tuple[list[int], list[int], int]] | None:
    """{(topic, partition): (replicas, isr, leader)} of every topic, or None if unreachable."""
    from confluent_kafka.admin import AdminClient
    try:
        a = AdminClient({"bootstrap.servers": State.bootstrap,
                         "socket.connection.setup.timeout.ms": 5000})
        md = a.list_topics(timeout=15)
    except Exception:
        return None
    return {(t, p): (list(pm.replicas), list(pm.isrs), pm.leader)
            for t, tm in md.topics.items() for p, pm in tm.partitions.items()}


def settled(rf_of=lambda topic: 3):
    """Every partition with its replica count (no move in flight), all in sync, a leader."""
    md = all_partitions()
    if not md:
        return None
    for (t, _), (r, i, l) in md.items():
        if len(r) != rf_of(t) or sorted(i) != sorted(r) or l < 0:
            return None
    return md


def replicas_on(md: dict, node: int) -> int:
    return sum(1 for r, _, _ in md.values() if node in r)


def test_scale_out_and_back_in_moves_partitions(kube: Kube, release):
    from load import Load
    topic = load_topic(kube, "load-scale")
    patch = lambda n: kube.k("patch", "cluster.strata.dev", CLUSTER, "--type=merge",
                             "-p", '{"spec":{"nodes":%d}}' % n)
    with Load(State.bootstrap, topic, list(range(6)), pace=0.004) as load:
        load.wait_acks_after(0, 300, timeout=60, what="before scaling")
        t0 = time.monotonic()
        patch(4)
        wait_for(lambda: ready_node_pods(kube, 4), 300, "4 node pods Ready")
        wait_for(lambda: cluster_ready(kube, 4), 180, "Cluster Ready with 4 nodes")

        def moved():
            md = settled()
            return md if md and replicas_on(md, 3) > 0 else None
        md = wait_for(moved, 300, "partitions moved onto node 3, every partition in sync")
        timing("scale 3 -> 4: patched -> partitions on node 3 and in sync", time.monotonic() - t0)
        print(f"after scaling out: {replicas_on(md, 3)} of {len(md)} partitions have a replica on node 3")
        load.wait_acks_after(time.monotonic(), 300, timeout=60, what="with 4 nodes")

        t1 = time.monotonic()
        patch(3)

        def drained():
            md = settled()
            return md if md and replicas_on(md, 3) == 0 else None
        wait_for(drained, 300, "node 3 drained (no replica left on it)")
        wait_for(lambda: ready_node_pods(kube, 3), 300, "3 node pods")
        wait_for(lambda: cluster_ready(kube, 3), 180, "Cluster Ready with 3 nodes")
        timing("scale 4 -> 3: patched -> drained, 3 pods", time.monotonic() - t1)
        load.wait_acks_after(time.monotonic(), 300, timeout=60, what="back on 3 nodes")
    # Only retriable errors: no record failed, no fatal error (librdkafka's transient
    # connection errors are in load.client_errors and allowed).
    load.assert_clean()
    check_exactly_once(load)
    # The fourth node's claim stays (StatefulSets keep claims; the README says so).
    pvc = kube.get("pvc", "data-strata-3")
    assert pvc is not None and pvc["status"]["phase"] == "Bound"


# ---- 8. bad edits are refused by the API server ---------------------------------------------

@pytest.mark.parametrize("kind,name,patch,says", [
    ("cluster.strata.dev", CLUSTER, {"spec": {"storage": {"size": "512Mi"}}},
     "storage.size cannot be decreased"),
    ("cluster.strata.dev", CLUSTER, {"spec": {"nodes": 0}}, "spec.nodes"),
    ("topic.strata.dev", "test-topic", {"spec": {"clusterRef": {"name": "elsewhere"}}},
     "clusterRef is immutable"),
    ("topic.strata.dev", "test-topic", {"spec": {"config": {"retention.ms": "a week"}}},
     "must be integers"),
])
def test_bad_edit_is_refused_with_its_message(kube: Kube, release, kind, name, patch, says):
    import json
    before = kube.get(kind, name)
    r = kube.k("patch", kind, name, "--type=merge", "-p", json.dumps(patch), check=False)
    assert r.rc != 0, r.text
    assert says in r.err, r.err
    after = kube.get(kind, name)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]


# ---- 5. a rolling change under an idempotent acks=all producer ------------------------------

def statefulset_rolled(kube: Kube, image: str):
    sts = nodes_updated(kube, 3)
    if not sts or sts["spec"]["template"]["spec"]["containers"][0]["image"] != image:
        return None
    if any(p["spec"]["containers"][0]["image"] != image for p in node_pods(kube)):
        return None
    return sts


def test_rolling_change_loses_and_duplicates_nothing(kube: Kube, release):
    from load import Load
    topic = load_topic(kube, "load-roll")
    new_image = os.environ.get("NODE_IMAGE_ROLL")
    if not new_image:
        pytest.skip("NODE_IMAGE_ROLL not set (run.sh tags the node image a second time)")
    with Load(State.bootstrap, topic, list(range(6)), pace=0.004) as load:
        load.wait_acks_after(0, 300, timeout=60, what="before the roll")
        t0 = time.monotonic()
        kube.k("patch", "cluster.strata.dev", CLUSTER, "--type=merge",
               "-p", '{"spec":{"image":"%s"}}' % new_image)
        # Watch the pods: how many are down at once, and in which order they go; and the
        # Cluster's status.roll as the operator reports its progress.
        most_down, order, last, rolls = 0, [], {}, []
        deadline = time.monotonic() + 600
        while not statefulset_rolled(kube, new_image):
            roll = ((cluster(kube) or {}).get("status") or {}).get("roll")
            if time.monotonic() > deadline:
                sts = kube.get("statefulset", CLUSTER) or {}
                pods = [(p["metadata"]["name"], pod_ready(p),
                         p["metadata"]["labels"].get("controller-revision-hash"))
                        for p in node_pods(kube)]
                pytest.fail(f"the roll did not finish in 600 s: status.roll {roll}, "
                            f"Progressing {condition(cluster(kube), 'Progressing')}, "
                            f"StatefulSet status {sts.get('status')}, pods {pods}")
            if roll and roll not in rolls:
                rolls.append(roll)
            pods = node_pods(kube)
            down = [p["metadata"]["name"] for p in pods if not pod_ready(p)] + \
                   [f"strata-{i}" for i in range(3) if f"strata-{i}" not in
                    {p["metadata"]["name"] for p in pods}]
            most_down = max(most_down, len(set(down)))
            for p in pods:
                uid = p["metadata"]["uid"]
                if last.get(p["metadata"]["name"]) not in (None, uid):
                    order.append(p["metadata"]["name"])
                last[p["metadata"]["name"]] = uid
            time.sleep(0.5)
        t_rolled = time.monotonic() - t0
        wait_for(lambda: all_in_sync(topic), 240, "every partition in sync after the roll")
        t_sync = time.monotonic() - t0
        load.wait_acks_after(time.monotonic(), 300, timeout=60, what="after the roll")
        t_end = time.monotonic()
    load.assert_clean()
    check_exactly_once(load)
    acks = sorted(a.t_ack for a in load.acks if t0 - 5 <= a.t_ack <= t_end)
    gap = max((b - a for a, b in zip(acks, acks[1:])), default=float("inf"))
    timing("rolling change of 3 nodes: patched -> all pods replaced and Ready", t_rolled)
    timing("rolling change of 3 nodes: patched -> every partition in sync", t_sync)
    timing("rolling change: longest stretch without an ack", gap)
    print(f"roll order (pods replaced): {order}; at most {most_down} node(s) down at once")
    for r in rolls:
        print(f"  status.roll: {r}")
    assert most_down <= 1, f"{most_down} nodes were down at once (order {order})"
    assert len(set(order)) == 3, order
    # The operator rolled them (OnDelete): highest ordinal first, its progress in the status.
    assert order == [f"{CLUSTER}-2", f"{CLUSTER}-1", f"{CLUSTER}-0"], order
    assert any(r.get("replacing") for r in rolls), rolls
    assert {r["updatedNodes"] for r in rolls} >= {0, 1, 2}, rolls
    events = [e for e in kube.get("events.events.k8s.io")["items"]
              if e.get("reason") == "RestartingNode"
              and e.get("regarding", {}).get("name") == CLUSTER]
    replaced = {e["note"].split()[2] for e in events if e.get("note")}
    assert {f"{CLUSTER}-{i}" for i in range(3)} <= replaced, [e.get("note") for e in events]


# ---- tiering to MinIO ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minio(tmp_path_factory):
    """MinIO (tests/testbed/minio.sh) on the node's address in the cluster's network namespace
    (this process runs there): the pods reach it, nothing outside the namespace does."""
    import boto3
    host = os.environ.get("MINIO_HOST_FOR_PODS", "10.213.0.2")
    port = free_port(host)
    d = tmp_path_factory.mktemp("minio")
    script = str(CHART.parents[1] / "tests" / "testbed" / "minio.sh")
    env = dict(os.environ, MINIO_HOST=host)
    r = subprocess.run(["bash", script, "start", str(d), str(port)], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"minio.sh start: {r.stdout}{r.stderr}")
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=env.get("MINIO_ROOT_USER", "strata"),
                      aws_secret_access_key=env.get("MINIO_ROOT_PASSWORD", "strata-secret"))
    s3.create_bucket(Bucket="strata-k8s")
    yield {"endpoint": endpoint, "s3": s3, "bucket": "strata-k8s",
           "user": env.get("MINIO_ROOT_USER", "strata"),
           "password": env.get("MINIO_ROOT_PASSWORD", "strata-secret")}
    subprocess.run(["bash", script, "stop", str(d)], env=env)


def test_tiered_topic_uploads_and_reads_back_from_the_bucket(kube: Kube, release, minio):
    from confluent_kafka import Consumer, Producer, TopicPartition
    kube.k("create", "secret", "generic", "strata-s3",
           f"--from-literal=AWS_ACCESS_KEY_ID={minio['user']}",
           f"--from-literal=AWS_SECRET_ACCESS_KEY={minio['password']}", check=False)
    gen = cluster(kube)["metadata"]["generation"]
    kube.k("patch", "cluster.strata.dev", CLUSTER, "--type=merge", "-p", yaml.safe_dump({"spec": {
        "objectStore": {"bucket": minio["bucket"], "prefix": "k8s", "endpoint": minio["endpoint"],
                        "region": "us-east-1", "credentialsSecretRef": {"name": "strata-s3"}}}}))
    t0 = time.monotonic()

    def rolled():
        c = cluster_ready(kube, 3)
        if not c or c["metadata"]["generation"] == gen:
            return None
        sts = nodes_updated(kube, 3)
        env = {e["name"] for e in sts["spec"]["template"]["spec"]["containers"][0].get("env", [])
               } if sts else set()
        return "STRATA_OBJECT_STORE" in env and sts
    wait_for(rolled, 600, "the nodes restarted with the object store")
    timing("objectStore added -> nodes rolled", time.monotonic() - t0)

    name = f"tiered-{int(time.time()) % 100000}"
    kube.apply(topic_manifest(name, name, partitions=1, config={
        "remote.storage.enable": "true", "segment.bytes": "65536",
        "local.retention.bytes": "65536", "retention.ms": "-1"}))
    wait_for(lambda: topic_ready(kube, name), 120, "Topic tiered Ready")
    wait_for(lambda: all_in_sync(name), 60, "tiered in sync")
    p = Producer({"bootstrap.servers": State.bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5, "batch.size": 16384})
    values_ = [b"tiered-%06d-" % i + b"x" * 1000 for i in range(2000)]
    for v in values_:
        while True:
            try:
                p.produce(name, v, partition=0)
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0

    def uploaded():
        keys = []
        for page in minio["s3"].get_paginator("list_objects_v2").paginate(
                Bucket=minio["bucket"], Prefix="k8s/"):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys if len(keys) >= 10 else None
    keys = wait_for(uploaded, 180, "segments of the tiered topic in the bucket", every=2)
    t = wait_for(lambda: (lambda t: t if (t or {}).get("status", {}).get("remoteBytes", 0) > 0 else None)(
                     kube.get("topic.strata.dev", name)),
                 120, "Topic status with bytes in the object store", every=2)
    assert t["status"]["remoteBytes"] > 0, (t["status"], keys[:5])

    c = Consumer({"bootstrap.servers": State.bootstrap, "group.id": "tiered-check",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(name, 0, 0)])
    got, deadline = [], time.monotonic() + 120
    while len(got) < len(values_) and time.monotonic() < deadline:
        for m in c.consume(500, timeout=1):
            assert not m.error(), m.error()
            got.append(m.value())
    c.close()
    assert got == values_, f"read {len(got)} of {len(values_)}"


# ---- 7. helm upgrade and helm uninstall -----------------------------------------------------

def test_helm_upgrade_rolls_the_operator(kube: Kube, release, images):
    old = {p["metadata"]["name"] for p in kube.pods(OPERATOR_SELECTOR)}
    t0 = time.monotonic()
    kube.helm("upgrade", RELEASE, str(CHART), "-n", NAMESPACE,
              *values(images, **{"operator.logLevel": "debug"}))

    def rolled():
        pods = [p for p in kube.pods(OPERATOR_SELECTOR) if pod_ready(p)]
        if len(pods) != 2 or {p["metadata"]["name"] for p in pods} & old:
            return None
        if len(kube.pods(OPERATOR_SELECTOR)) != 2:
            return None
        envs = [{e["name"]: e.get("value") for e in p["spec"]["containers"][0]["env"]} for p in pods]
        return pods if all(e.get("RUST_LOG") == "debug" for e in envs) else None
    pods = wait_for(rolled, 240, "two new operator pods with RUST_LOG=debug")
    names = {p["metadata"]["name"] for p in pods}
    wait_for(lambda: ((kube.get("lease", LEASE) or {}).get("spec") or {}).get("holderIdentity") in names,
             90, "a new pod holding the Lease")
    wait_for(lambda: cluster_ready(kube, 3), 120, "the Cluster Ready under the new operator")
    timing("helm upgrade -> operator rolled, Lease taken, Cluster Ready", time.monotonic() - t0)


def test_helm_uninstall_keeps_what_the_readme_says(kube: Kube, release):
    kube.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait")
    wait_for(lambda: not kube.pods(OPERATOR_SELECTOR), 120, "operator pods gone")
    # Gone: the release's own objects.
    for kind, name in (("deployment", "strata-operator"), ("role", "strata-operator"),
                       ("service", "strata-controller"), ("serviceaccount", "strata-operator")):
        assert kube.get(kind, name) is None, f"{kind}/{name} still there"
    # Kept: CRDs, the Cluster and Topics, the nodes and their claims, the state Secret, the
    # Lease, the nodes' ServiceAccount.
    for crd in ("clusters.strata.dev", "topics.strata.dev"):
        assert kube.kubectl("get", "crd", crd, check=False).rc == 0, crd
    assert kube.get("cluster.strata.dev", CLUSTER) is not None
    assert kube.get("topic.strata.dev", "test-topic") is not None
    assert kube.get("secret", "strata-controller-state") is not None
    assert kube.get("lease", LEASE) is not None
    assert kube.get("serviceaccount", "strata-node") is not None
    pods = ready_node_pods(kube, 3)
    assert pods, [(p["metadata"]["name"], p["status"].get("phase")) for p in node_pods(kube)]
    for i in range(3):
        assert kube.get("pvc", f"data-strata-{i}")["status"]["phase"] == "Bound"
