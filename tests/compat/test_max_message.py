"""Records near a topic's max.message.bytes: the broker, not the client, refuses the big one."""

import pytest
import kafka.errors as kerr
from confluent_kafka import KafkaError

from helpers import ck_produce, ck_read, create_topic, kp_producer, kp_read

LIMIT = 100_000
OK_SIZE = 90_000
BIG_SIZE = 200_000


@pytest.fixture
def limited_topic(broker, topic):
    create_topic(broker.bootstrap, topic, 1, config={"max.message.bytes": str(LIMIT)})
    return topic


@pytest.mark.parametrize("idempotent", [True, False])
def test_kafka_python_message_too_large(broker, limited_topic, idempotent):
    # max_request_size far above the topic limit: the client must not refuse locally.
    p = kp_producer(broker.bootstrap, max_request_size=4_000_000, enable_idempotence=idempotent,
                    retries=2)
    ok = p.send(limited_topic, value=b"a" * OK_SIZE).get(timeout=30)
    assert ok.offset == 0
    with pytest.raises(kerr.MessageSizeTooLargeError):
        p.send(limited_topic, value=b"b" * BIG_SIZE).get(timeout=30)
    if idempotent:
        # kafka-python treats an error on an idempotent batch as fatal for that producer
        # (client behaviour): carry on with a fresh one.
        p.close(timeout=10)
        p = kp_producer(broker.bootstrap)
    # The refused record left no trace: the next one gets offset 1.
    after = p.send(limited_topic, value=b"c").get(timeout=30)
    assert after.offset == 1
    p.close(timeout=10)
    got = kp_read(broker.bootstrap, limited_topic, partitions=[0])
    assert [len(r.value) for r in got] == [OK_SIZE, 1]


def test_confluent_message_too_large(broker, limited_topic):
    reports = ck_produce(
        broker.bootstrap, limited_topic,
        [dict(value=b"a" * OK_SIZE, partition=0), dict(value=b"b" * BIG_SIZE, partition=0)],
        **{"message.max.bytes": 4_000_000, "linger.ms": 0, "batch.num.messages": 1},
    )
    assert reports[0] == (None, 0, 0)
    err = reports[1][0]
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, reports[1]
    got = ck_read(broker.bootstrap, limited_topic, partitions=[0])
    assert [len(m.value()) for m in got] == [OK_SIZE]


def test_default_limit_allows_large_record(broker, topic):
    """Without a topic override a ~900 KB record fits the default (1 MB) limit."""
    p = kp_producer(broker.bootstrap, max_request_size=4_000_000)
    p.send(topic, value=b"z" * 900_000).get(timeout=30)
    p.close(timeout=10)
    got = kp_read(broker.bootstrap, topic, partitions=[0])
    assert [len(r.value) for r in got] == [900_000]
