"""Idempotent producers: many records, no duplicates, order kept."""

import pytest

from helpers import ck_producer, ck_read, create_topic, kp_producer, kp_read

N = 5000


def test_kafka_python_idempotent_default(broker, topic):
    p = kp_producer(broker.bootstrap)  # kafka-python 3: idempotence on by default
    futures = [p.send(topic, key=b"k%d" % (i % 10), value=b"%06d" % i, partition=0)
               for i in range(N)]
    p.flush(timeout=120)
    offsets = [f.get(timeout=30).offset for f in futures]
    assert p.config["enable_idempotence"] is True, "idempotence was silently turned off"
    assert p._transaction_manager is not None and p._transaction_manager.producer_id_and_epoch.producer_id >= 0
    p.close(timeout=10)
    assert offsets == list(range(N))
    got = kp_read(broker.bootstrap, topic, partitions=[0], timeout=60)
    assert [r.value for r in got] == [b"%06d" % i for i in range(N)]


def test_confluent_idempotent(broker, topic):
    create_topic(broker.bootstrap, topic, 3)
    p = ck_producer(broker.bootstrap, **{"enable.idempotence": True, "linger.ms": 2,
                                         "max.in.flight.requests.per.connection": 5})
    acked = {0: [], 1: [], 2: []}
    errors = []

    def on_delivery(err, msg):
        if err:
            errors.append(err)
        else:
            acked[msg.partition()].append((msg.offset(), msg.value()))

    for i in range(N):
        while True:
            try:
                p.produce(topic, value=b"%06d" % i, partition=i % 3, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(120) == 0
    assert errors == []
    got = ck_read(broker.bootstrap, topic, partitions=[0, 1, 2], timeout=60)
    assert len(got) == N
    for part in range(3):
        vals = [m.value() for m in got if m.partition() == part]
        assert vals == [b"%06d" % i for i in range(part, N, 3)]
        assert [o for o, _ in acked[part]] == list(range(len(vals)))
