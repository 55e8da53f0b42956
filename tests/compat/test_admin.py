"""Topic administration through kafka-python's KafkaAdminClient and confluent's AdminClient."""

import pytest
import kafka.errors as kerr
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType

from helpers import (
    ck_admin,
    ck_produce,
    ck_read,
    kp_consumer,
    kp_partitions,
    topic_names,
    wait_topic,
)
from strata_testlib import wait_for

DEFAULT_RETENTION_MS = "604800000"


# ==== kafka-python ==========================================================================


@pytest.fixture
def kadmin(broker):
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)
    yield a
    a.close()


def _kp_configs(kadmin, topic):
    r = kadmin.describe_configs([KpConfigResource(ConfigResourceType.TOPIC, topic)],
                                config_filter="all")
    return r["topic"][topic]


def test_kp_create_topic_with_configs(broker, kadmin, topic):
    r = kadmin.create_topics({topic: {"num_partitions": 3, "replication_factor": 1,
                                      "configs": {"retention.ms": "123456",
                                                  "cleanup.policy": "compact"}}})
    assert r["topics"][0]["error_code"] == 0
    wait_topic(broker.bootstrap, topic, 3)
    desc = {t["name"]: t for t in kadmin.describe_topics([topic])}[topic]
    assert len(desc["partitions"]) == 3
    assert all(p["leader_id"] == 1 and p["replica_nodes"] == [1] for p in desc["partitions"])

    cfg = _kp_configs(kadmin, topic)
    assert cfg["retention.ms"]["value"] == "123456"
    assert cfg["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
    assert cfg["cleanup.policy"]["value"] == "compact"
    assert cfg["max.message.bytes"]["config_source"] == "DEFAULT_CONFIG"
    # The default filter ('modified') returns only what was set on the topic.
    modified = kadmin.describe_configs([KpConfigResource(ConfigResourceType.TOPIC, topic)])
    assert set(modified["topic"][topic]) == {"retention.ms", "cleanup.policy"}


def test_kp_validate_only_does_not_create(broker, kadmin, topic):
    r = kadmin.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}},
                             validate_only=True)
    assert r["topics"][0]["error_code"] == 0
    assert topic not in kadmin.list_topics()
    assert topic not in topic_names(broker.bootstrap)


def test_kp_create_existing_topic(broker, kadmin, topic):
    kadmin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}})
    with pytest.raises(kerr.TopicAlreadyExistsError):
        kadmin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}})


def test_kp_invalid_replication_factor(broker, kadmin, topic):
    with pytest.raises(kerr.InvalidReplicationFactorError):
        kadmin.create_topics({topic: {"num_partitions": 1, "replication_factor": 3}})
    assert topic not in kadmin.list_topics()


def test_kp_alter_configs_incremental(broker, kadmin, topic):
    kadmin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1,
                                  "configs": {"retention.ms": "123456"}}})
    wait_topic(broker.bootstrap, topic, 1)
    r = kadmin.alter_configs([KpConfigResource(ConfigResourceType.TOPIC, topic,
                                               configs={"segment.ms": "999999"})],
                             incremental=True)
    assert r == {"topic": {topic: "OK"}}
    cfg = _kp_configs(kadmin, topic)
    assert cfg["segment.ms"]["value"] == "999999"
    assert cfg["retention.ms"]["value"] == "123456", "incremental alter must keep other keys"

    r = kadmin.reset_configs([KpConfigResource(ConfigResourceType.TOPIC, topic,
                                               configs=["retention.ms"])], incremental=True)
    assert r == {"topic": {topic: "OK"}}
    cfg = _kp_configs(kadmin, topic)
    assert cfg["retention.ms"]["value"] == DEFAULT_RETENTION_MS
    assert cfg["retention.ms"]["config_source"] == "DEFAULT_CONFIG"
    assert cfg["segment.ms"]["value"] == "999999"


def test_kp_alter_configs_legacy(broker, kadmin, topic):
    """AlterConfigs (non-incremental); kafka-python re-sends the other modified keys itself."""
    kadmin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1,
                                  "configs": {"retention.ms": "123456"}}})
    wait_topic(broker.bootstrap, topic, 1)
    r = kadmin.alter_configs([KpConfigResource(ConfigResourceType.TOPIC, topic,
                                               configs={"segment.ms": "999999"})],
                             incremental=False)
    assert r == {"topic": {topic: "OK"}}
    cfg = _kp_configs(kadmin, topic)
    assert cfg["segment.ms"]["value"] == "999999"
    assert cfg["retention.ms"]["value"] == "123456"


def test_kp_create_partitions(broker, kadmin, topic):
    kadmin.create_topics({topic: {"num_partitions": 3, "replication_factor": 1}})
    wait_topic(broker.bootstrap, topic, 3)
    kadmin.create_partitions({topic: 5})
    wait_topic(broker.bootstrap, topic, 5)
    c = kp_consumer(broker.bootstrap)
    try:
        assert wait_for(lambda: kp_partitions(c, topic) == [0, 1, 2, 3, 4] or None, 30,
                        "kafka-python to see 5 partitions")
    finally:
        c.close()
    with pytest.raises(kerr.InvalidPartitionsError):
        kadmin.create_partitions({topic: 2})
    with pytest.raises(kerr.InvalidPartitionsError):
        kadmin.create_partitions({topic: 5})  # same count is not an increase either


def test_kp_delete_topic(broker, kadmin, topic):
    kadmin.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}})
    wait_topic(broker.bootstrap, topic, 2)
    assert topic in kadmin.list_topics()
    r = kadmin.delete_topics([topic])
    assert r["topics"][0]["error_code"] == 0
    wait_for(lambda: topic not in topic_names(broker.bootstrap), 30, "topic gone from metadata")
    assert topic not in kadmin.list_topics()
    with pytest.raises(kerr.UnknownTopicOrPartitionError):
        kadmin.delete_topics([topic])


# ==== confluent-kafka ========================================================================


def _ck_error(excinfo) -> int:
    err = excinfo.value.args[0]
    assert isinstance(err, KafkaError), repr(excinfo.value)
    return err.code()


def _ck_create(admin, topic, partitions=1, rf=1, config=None, validate_only=False):
    fs = admin.create_topics([NewTopic(topic, partitions, rf, config=config or {})],
                             validate_only=validate_only, operation_timeout=30, request_timeout=30)
    return fs[topic].result(timeout=60)


def _ck_configs(admin, topic):
    res = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([res], request_timeout=30)[res].result(timeout=60)


def test_ck_create_topic_with_configs(broker, topic):
    admin = ck_admin(broker.bootstrap)
    _ck_create(admin, topic, 3, config={"retention.ms": "123456", "cleanup.policy": "compact"})
    wait_topic(broker.bootstrap, topic, 3)
    md = admin.list_topics(topic, timeout=10).topics[topic]
    assert sorted(md.partitions) == [0, 1, 2]
    assert all(p.leader == 1 and p.replicas == [1] and p.isrs == [1] for p in md.partitions.values())

    cfg = _ck_configs(admin, topic)
    assert cfg["retention.ms"].value == "123456"
    assert cfg["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert cfg["cleanup.policy"].value == "compact"
    assert cfg["segment.ms"].source == ConfigSource.DEFAULT_CONFIG.value


def test_ck_validate_only_does_not_create(broker, topic):
    admin = ck_admin(broker.bootstrap)
    _ck_create(admin, topic, 2, validate_only=True)
    assert topic not in topic_names(broker.bootstrap)


def test_ck_create_existing_topic(broker, topic):
    admin = ck_admin(broker.bootstrap)
    _ck_create(admin, topic)
    with pytest.raises(KafkaException) as ei:
        _ck_create(admin, topic)
    assert _ck_error(ei) == KafkaError.TOPIC_ALREADY_EXISTS


def test_ck_invalid_replication_factor(broker, topic):
    admin = ck_admin(broker.bootstrap)
    with pytest.raises(KafkaException) as ei:
        _ck_create(admin, topic, 1, rf=3)
    assert _ck_error(ei) == KafkaError.INVALID_REPLICATION_FACTOR
    assert topic not in topic_names(broker.bootstrap)


@pytest.mark.parametrize("config", [{"cleanup.policy": "bogus"}, {"retention.ms": "soon"},
                                    {"no.such.config": "1"}])
def test_ck_invalid_config(broker, topic, config):
    admin = ck_admin(broker.bootstrap)
    with pytest.raises(KafkaException) as ei:
        _ck_create(admin, topic, 1, config=config)
    assert _ck_error(ei) == KafkaError.INVALID_CONFIG
    assert topic not in topic_names(broker.bootstrap)


def test_ck_describe_configs_unknown_topic(broker, topic):
    admin = ck_admin(broker.bootstrap)
    with pytest.raises(KafkaException) as ei:
        _ck_configs(admin, topic)
    assert _ck_error(ei) == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_ck_incremental_alter_configs(broker, topic):
    admin = ck_admin(broker.bootstrap)
    _ck_create(admin, topic, config={"retention.ms": "123456"})
    wait_topic(broker.bootstrap, topic, 1)
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("segment.ms", "999999", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    admin.incremental_alter_configs([res], request_timeout=30)[res].result(timeout=60)
    cfg = _ck_configs(admin, topic)
    assert cfg["segment.ms"].value == "999999"
    assert cfg["segment.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert cfg["retention.ms"].value == DEFAULT_RETENTION_MS
    assert cfg["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value


def test_ck_legacy_alter_configs_replaces_all(broker, topic):
    """Non-incremental AlterConfigs sets the topic's whole config: unnamed keys revert."""
    admin = ck_admin(broker.bootstrap)
    _ck_create(admin, topic, config={"retention.ms": "123456", "cleanup.policy": "compact"})
    wait_topic(broker.bootstrap, topic, 1)
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"segment.ms": "999999"})
    admin.alter_configs([res], request_timeout=30)[res].result(timeout=60)
    cfg = _ck_configs(admin, topic)
    assert cfg["segment.ms"].value == "999999"
    assert cfg["retention.ms"].value == DEFAULT_RETENTION_MS
    assert cfg["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert cfg["cleanup.policy"].value == "delete"


def test_ck_alter_configs_invalid_value(broker, topic):
    admin = ck_admin(broker.bootstrap)
    _ck_create(admin, topic)
    wait_topic(broker.bootstrap, topic, 1)
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "not-a-number", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as ei:
        admin.incremental_alter_configs([res], request_timeout=30)[res].result(timeout=60)
    assert _ck_error(ei) == KafkaError.INVALID_CONFIG


def test_ck_create_partitions(broker, topic):
    admin = ck_admin(broker.bootstrap)
    _ck_create(admin, topic, 3)
    wait_topic(broker.bootstrap, topic, 3)
    admin.create_partitions([NewPartitions(topic, 5)], request_timeout=30)[topic].result(timeout=60)
    wait_topic(broker.bootstrap, topic, 5)
    # A producer can write to, and a consumer read from, a new partition.
    reports = ck_produce(broker.bootstrap, topic, [dict(value=b"p4", partition=4)])
    assert reports == [(None, 4, 0)]
    assert [m.value() for m in ck_read(broker.bootstrap, topic, partitions=[4], count=1)] == [b"p4"]

    with pytest.raises(KafkaException) as ei:
        admin.create_partitions([NewPartitions(topic, 2)], request_timeout=30)[topic].result(timeout=60)
    assert _ck_error(ei) == KafkaError.INVALID_PARTITIONS


def test_ck_delete_topic(broker, topic):
    admin = ck_admin(broker.bootstrap)
    _ck_create(admin, topic, 2)
    wait_topic(broker.bootstrap, topic, 2)
    admin.delete_topics([topic], operation_timeout=30, request_timeout=30)[topic].result(timeout=60)
    wait_for(lambda: topic not in topic_names(broker.bootstrap), 30, "topic gone from metadata")
    with pytest.raises(KafkaException) as ei:
        admin.delete_topics([topic], operation_timeout=30, request_timeout=30)[topic].result(timeout=60)
    assert _ck_error(ei) == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_ck_recreate_after_delete_starts_empty(broker, topic):
    admin = ck_admin(broker.bootstrap)
    _ck_create(admin, topic, 1)
    wait_topic(broker.bootstrap, topic, 1)
    ck_produce(broker.bootstrap, topic, [dict(value=b"old%d" % i) for i in range(5)])
    admin.delete_topics([topic], operation_timeout=30, request_timeout=30)[topic].result(timeout=60)
    wait_for(lambda: topic not in topic_names(broker.bootstrap), 30, "topic gone from metadata")

    def recreate():
        try:
            _ck_create(admin, topic, 1)
            return True
        except KafkaException as e:
            # Deletion may still be finishing on the broker.
            if e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return False
            raise
    wait_for(recreate, 30, "re-creating the deleted topic")
    wait_topic(broker.bootstrap, topic, 1)
    reports = ck_produce(broker.bootstrap, topic, [dict(value=b"new")])
    assert reports == [(None, 0, 0)]
    assert [m.value() for m in ck_read(broker.bootstrap, topic, partitions=[0])] == [b"new"]
