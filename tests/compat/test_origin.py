"""The producer from the project's origin document, run verbatim, and its consumer example."""

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer

from helpers import kp_read

EXPECTED = [b"message%d" % i for i in range(10)]


@pytest.mark.timeout(90)
def test_origin_producer_verbatim(broker):
    PORT = broker.port
    producer = KafkaProducer(bootstrap_servers='localhost:%d' % PORT)
    for i in range(10):
        producer.send('test_topic', b'message%d' % i)
    producer.flush()
    producer.close()

    records = kp_read(broker.bootstrap, "test_topic", partitions=[0], count=10)
    assert [r.value for r in records] == EXPECTED
    assert [r.offset for r in records] == list(range(10))


def _origin_consumer(port, **kw):
    return KafkaConsumer(
        "test_topic",
        bootstrap_servers="localhost:%d" % port,
        group_id="test_group",
        consumer_timeout_ms=30000,
        **kw,
    )


@pytest.mark.groups
@pytest.mark.timeout(120)
def test_origin_example_producer_first(broker):
    """Producer runs first; the group consumer starts at 'earliest' and sees everything."""
    producer = KafkaProducer(bootstrap_servers="localhost:%d" % broker.port)
    for i in range(10):
        producer.send("test_topic_pf", b"message%d" % i)
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        "test_topic_pf",
        bootstrap_servers="localhost:%d" % broker.port,
        group_id="test_group",
        auto_offset_reset="earliest",
        consumer_timeout_ms=30000,
    )
    got = []
    for message in consumer:
        got.append(message.value)
        if len(got) == 10:
            break
    consumer.close()
    assert got == EXPECTED


@pytest.mark.groups
@pytest.mark.timeout(120)
def test_origin_example_consumer_first(broker):
    """The group consumer starts first (default auto_offset_reset='latest'), then the producer."""
    consumer = KafkaConsumer(
        "test_topic_cf",
        bootstrap_servers="localhost:%d" % broker.port,
        group_id="test_group",
        consumer_timeout_ms=30000,
    )
    # Wait for the group to hand out the partition and for the 'latest' position to be fixed,
    # otherwise records produced before that are (correctly) skipped.
    deadline = time.monotonic() + 60
    while not consumer.assignment():
        assert time.monotonic() < deadline, "consumer never got an assignment"
        consumer.poll(timeout_ms=500)
    for tp in consumer.assignment():
        consumer.position(tp)

    producer = KafkaProducer(bootstrap_servers="localhost:%d" % broker.port)
    for i in range(10):
        producer.send("test_topic_cf", b"message%d" % i)
    producer.flush()
    producer.close()

    got = []
    for message in consumer:
        got.append(message.value)
        if len(got) == 10:
            break
    consumer.close()
    assert got == EXPECTED
