"""Topic resources end to end: a real API server, two `strata-operator kubernetes` replicas
(Lease election), three strata-node processes, real Kafka clients (kafka-python)."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from strata_fixtures import StrataOnKube
from strata_testlib import wait_for

REPORT = os.environ.get("STRATA_OPERATOR_REPORT")


def report(key: str, value: float):
    print(f"{key}: {value:.3f}")
    if REPORT:
        try:
            data = json.loads(open(REPORT).read())
        except (FileNotFoundError, ValueError):
            data = {}
        data.setdefault(key, []).append(round(value, 3))
        with open(REPORT, "w") as f:
            json.dump(data, f, indent=1)


@pytest.fixture
def strata(kube, ns, tmp_path):
    s = StrataOnKube(tmp_path, kube.env["KUBECONFIG"], ns)
    try:
        s.start()
        yield s
    finally:
        # Captured output: pytest shows it only when the test failed.
        print(s.logs())
        s.close()


def topic(name: str, partitions: int, **spec) -> dict:
    return {
        "apiVersion": "strata.dev/v1alpha1",
        "kind": "Topic",
        "metadata": {"name": name},
        "spec": {"partitions": partitions, "clusterRef": {"name": "strata"}, **spec},
    }


def ready(kube, ns, name) -> bool:
    t = kube.get("topic", name, ns)
    return any(c["type"] == "Ready" and c["status"] == "True" for c in t.get("status", {}).get("conditions", []))


def partitions_seen(bootstrap, name) -> int:
    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        d = a.describe_topics([name])[0]
        return 0 if d["error_code"] else len(d["partitions"])
    finally:
        a.close()


def leaders(kube, ns, name) -> list[tuple[int, int, int]]:
    st = kube.get("topic", name, ns)["status"]
    return [(p["partition"], p["leader"], p["leaderEpoch"]) for p in st["partitionStatus"]]


def test_origin_example_on_a_topic_resource(kube, ns, strata):
    t0 = time.time()
    kube.create(topic("test-topic", 1, topicName="test_topic", replicationFactor=3,
                      config={"min.insync.replicas": "2"}), ns)
    wait_for(lambda: ready(kube, ns, "test-topic"), 30, "Topic Ready")
    report("topic_apply_to_ready_s", time.time() - t0)
    st = kube.get("topic", "test-topic", ns)["status"]
    assert st["partitions"] == 1 and st["replicationFactor"] == 3
    assert st["effectiveConfig"] == {"min.insync.replicas": "2"}
    assert len(st["topicId"]) == 36
    assert st["partitionStatus"][0]["isr"] and st["underReplicatedPartitions"] == 0

    # The origin document's example, with its default auto_offset_reset='latest': the
    # consumer sees what is produced after it joined, not the first ten.
    bs = strata.bootstrap
    producer = KafkaProducer(bootstrap_servers=bs)
    for i in range(10):
        producer.send('test_topic', b'message%d' % i)
    producer.flush()
    consumer = KafkaConsumer('test_topic', group_id='test_group', bootstrap_servers=bs,
                             consumer_timeout_ms=15000)
    seen = []

    def consume():
        for message in consumer:
            seen.append((message.topic, message.value))
            if len(seen) == 5:
                break

    th = threading.Thread(target=consume)
    th.start()
    wait_for(lambda: consumer.assignment(), 30, "the consumer's assignment")
    time.sleep(1)  # the position (latest) is fetched after assignment
    for i in range(10, 15):
        producer.send('test_topic', b'message%d' % i)
    producer.flush()
    th.join(30)
    consumer.close()
    assert seen == [('test_topic', b'message%d' % i) for i in range(10, 15)]
    # Bytes on the nodes' disks (every replica) reach the status from the nodes' heartbeats.
    st = wait_for(lambda: (lambda s: s if s.get("localBytes", 0) > 0 else None)(
        kube.get("topic", "test-topic", ns)["status"]), 30, "localBytes in the status")
    assert st["remoteBytes"] == 0
    out = kube.kubectl("get", "topics", "-n", ns).out
    assert "LOCAL" in out and str(st["localBytes"]) in out, out


def test_partitions_grow_by_merge_patch_and_never_shrink(kube, ns, strata):
    kube.create(topic("grow", 3), ns)
    wait_for(lambda: ready(kube, ns, "grow"), 30, "Topic Ready")
    # Ready means committed by the controller; nodes apply the pushed metadata right after.
    wait_for(lambda: partitions_seen(strata.bootstrap, "grow") == 3, 10, "clients to see 3 partitions")
    t0 = time.time()
    kube.merge_patch("topic", "grow", ns, {"spec": {"partitions": 6}})
    wait_for(lambda: partitions_seen(strata.bootstrap, "grow") == 6, 30, "clients to see 6 partitions")
    report("partition_increase_to_clients_s", time.time() - t0)
    wait_for(lambda: kube.get("topic", "grow", ns)["status"].get("partitions") == 6, 30, "status 6")
    r = kube.merge_patch("topic", "grow", ns, {"spec": {"partitions": 2}}, check=False)
    assert not r.ok and "partitions cannot be decreased" in r.err, r.err
    assert partitions_seen(strata.bootstrap, "grow") == 6


def test_kafka_admin_topics_and_topic_resources_are_one_source_of_truth(kube, ns, strata):
    a = KafkaAdminClient(bootstrap_servers=strata.bootstrap)
    try:
        a.create_topics([NewTopic("Made_By_Kafka", 2, 3, topic_configs={"retention.ms": "3600000"})])
        t = wait_for(lambda: next((t for t in kube.kubectl("get", "topics", "-n", ns, "-o", "json").json()["items"]
                                       if t["spec"].get("topicName") == "Made_By_Kafka"), None),
                     30, "a Topic resource for the Kafka-created topic")
        assert t["metadata"]["name"] == "made-by-kafka"
        assert t["metadata"]["annotations"]["strata.dev/origin"] == "kafka"
        assert t["spec"]["partitions"] == 2 and t["spec"]["replicationFactor"] == 3
        assert t["spec"]["config"] == {"retention.ms": "3600000"}
        wait_for(lambda: ready(kube, ns, "made-by-kafka"), 30, "the mirrored resource Ready")

        # Deleting a resource deletes the topic.
        kube.create(topic("doomed", 1), ns)
        wait_for(lambda: ready(kube, ns, "doomed"), 30, "Topic Ready")
        wait_for(lambda: "doomed" in a.list_topics(), 10, "clients to see the topic")
        kube.kubectl("delete", "topic", "doomed", "-n", ns, "--wait=true", "--timeout=30s")
        wait_for(lambda: "doomed" not in a.list_topics(), 30, "the Kafka topic to go")

        # Deleting through Kafka deletes the resource.
        a.delete_topics(["Made_By_Kafka"])
        wait_for(lambda: "made-by-kafka" not in kube.kubectl("get", "topics", "-n", ns, "-o", "name").out,
                 30, "the resource of a topic deleted through Kafka to go")
    finally:
        a.close()


def test_operator_restart_and_failover_keep_leaders(kube, ns, strata):
    kube.create(topic("steady", 3, replicationFactor=3), ns)
    wait_for(lambda: ready(kube, ns, "steady"), 30, "Topic Ready")
    before = leaders(kube, ns, "steady")
    producer = KafkaProducer(bootstrap_servers=strata.bootstrap, acks="all", retries=50)
    acked = [producer.send("steady", b"before").get(timeout=30)]

    # Clean stop of the leading replica: it releases the Lease, the standby takes over.
    first = strata.leader()
    assert first is strata.operators[0]
    first.stop()
    wait_for(lambda: strata.leader() is strata.operators[1], 30, "the standby to lead")
    first.start()  # back as a standby
    acked.append(producer.send("steady", b"after-clean-stop").get(timeout=30))

    # Kill the leader: the standby takes over within the Lease duration.
    t0 = time.time()
    strata.operators[1].kill()
    wait_for(lambda: strata.leader() is strata.operators[0], 30, "the other replica to lead")
    took = time.time() - t0
    report("operator_takeover_after_sigkill_s", took)
    assert took <= StrataOnKube.LEASE_MS / 1000 * 1.5 + 2, took
    acked.append(producer.send("steady", b"after-kill").get(timeout=30))
    time.sleep(4)  # more than a session timeout: nodes were not declared dead meanwhile
    assert leaders(kube, ns, "steady") == before, "no leader change across operator failovers"
    lease = kube.get("lease", "strata-operator", ns)["spec"]
    assert lease["holderIdentity"] == "operator-0" and lease["leaseTransitions"] >= 2
    producer.close()


def test_deletion_policy_decides_what_happens_to_tiered_data(kube, ns, tmp_path):
    """Deleting a Topic resource always deletes the Kafka topic; with deletionPolicy Delete
    its tiered objects go from the bucket too, with Retain they stay."""
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    s = StrataOnKube(tmp_path, kube.env["KUBECONFIG"], ns, object_store=f"file://{bucket}")
    try:
        s.start()
        ids = {}
        for name, policy in (("gone", "Delete"), ("kept", "Retain")):
            kube.create(topic(name, 1, replicationFactor=3, deletionPolicy=policy,
                              config={"remote.storage.enable": "true", "segment.bytes": "16384"}), ns)
            wait_for(lambda: ready(kube, ns, name), 30, f"{name} Ready")
            wait_for(lambda: partitions_seen(s.bootstrap, name) == 1, 10, f"clients to see {name}")
            p = KafkaProducer(bootstrap_servers=s.bootstrap, acks="all")
            for i in range(200):
                p.send(name, b"x" * 1000)
            p.flush()
            p.close()
            ids[name] = kube.get("topic", name, ns)["status"]["topicId"]
            wait_for(lambda: list((bucket / ids[name]).rglob("*.log")), 60, f"{name}'s segments in the bucket")
            wait_for(lambda: kube.get("topic", name, ns)["status"].get("remoteBytes", 0) > 0, 30,
                     f"{name}'s remoteBytes in the status")
        a = KafkaAdminClient(bootstrap_servers=s.bootstrap)
        for name in ids:
            kube.kubectl("delete", "topic", name, "-n", ns, "--wait=true", "--timeout=30s")
            wait_for(lambda: name not in a.list_topics(), 30, f"the Kafka topic {name} to go")
        a.close()
        wait_for(lambda: not list((bucket / ids["gone"]).rglob("*.*")), 30,
                 "the Delete topic's objects to leave the bucket")
        time.sleep(2)
        assert list((bucket / ids["kept"]).rglob("*.log")), "Retain keeps the tiered data"
    finally:
        print(s.logs())
        s.close()
