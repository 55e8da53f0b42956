"""ListOffsets: earliest/latest and by timestamp, through consumers and admin clients."""

import time
import uuid

import pytest
from confluent_kafka import TopicPartition as CkTP
from confluent_kafka.admin import OffsetSpec as CkOffsetSpec
from kafka import KafkaAdminClient
from kafka import TopicPartition as KpTP
from kafka.admin import OffsetSpec as KpOffsetSpec

from helpers import ck_admin, ck_consumer, create_topic, kp_consumer, kp_producer

BASE = (int(time.time()) - 3600) * 1000  # an hour ago, on a whole second
STEP = 1000
N = 10


@pytest.fixture(scope="module")
def ts_topic(broker):
    """A 1-partition topic whose record i has timestamp BASE + i*STEP.

    Records 0-4 go in one batch each, 5-9 in a single batch, so lookups land both on batch
    boundaries and inside a batch.
    """
    topic = f"timestamps-{uuid.uuid4().hex[:6]}"
    create_topic(broker.bootstrap, topic, 1)
    p = kp_producer(broker.bootstrap, linger_ms=0)
    for i in range(5):
        p.send(topic, value=b"r%d" % i, timestamp_ms=BASE + i * STEP, partition=0).get(timeout=30)
    p2 = kp_producer(broker.bootstrap, linger_ms=500)
    futs = [p2.send(topic, value=b"r%d" % i, timestamp_ms=BASE + i * STEP, partition=0)
            for i in range(5, N)]
    p2.flush(timeout=30)
    assert [f.get(timeout=30).offset for f in futs] == list(range(5, N))
    p.close(timeout=10)
    p2.close(timeout=10)
    return topic


# (target timestamp - BASE, expected offset or None)
CASES = [
    (-100_000, 0),
    (0, 0),
    (1, 1),
    (2500, 3),
    (5 * STEP, 5),
    (6500, 7),
    (9 * STEP, 9),
    (9 * STEP + 1, None),
]
CASE_IDS = [f"base{d:+d}-wants-{w}" for d, w in CASES]


def test_earliest_latest_empty_topic(broker, topic):
    create_topic(broker.bootstrap, topic, 2)
    c = kp_consumer(broker.bootstrap)
    try:
        tps = [KpTP(topic, 0), KpTP(topic, 1)]
        assert c.beginning_offsets(tps) == {tps[0]: 0, tps[1]: 0}
        assert c.end_offsets(tps) == {tps[0]: 0, tps[1]: 0}
    finally:
        c.close()
    cc = ck_consumer(broker.bootstrap)
    try:
        assert cc.get_watermark_offsets(CkTP(topic, 1), timeout=10, cached=False) == (0, 0)
    finally:
        cc.close()


def test_earliest_latest(broker, ts_topic):
    tp = KpTP(ts_topic, 0)
    c = kp_consumer(broker.bootstrap)
    try:
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: N}
    finally:
        c.close()

    cc = ck_consumer(broker.bootstrap)
    try:
        assert cc.get_watermark_offsets(CkTP(ts_topic, 0), timeout=10, cached=False) == (0, N)
    finally:
        cc.close()

    admin = ck_admin(broker.bootstrap)
    ctp = CkTP(ts_topic, 0)
    for spec, want in [(CkOffsetSpec.earliest(), 0), (CkOffsetSpec.latest(), N)]:
        info = admin.list_offsets({ctp: spec}, request_timeout=30)[ctp].result(timeout=60)
        assert info.offset == want

    ka = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)
    try:
        r = ka.list_partition_offsets({tp: KpOffsetSpec.EARLIEST})
        assert r[tp].offset == 0
        r = ka.list_partition_offsets({tp: KpOffsetSpec.LATEST})
        assert r[tp].offset == N
    finally:
        ka.close()


@pytest.mark.parametrize("delta,want", CASES, ids=CASE_IDS)
def test_offsets_for_times_kafka_python(broker, ts_topic, delta, want):
    target = BASE + delta
    tp = KpTP(ts_topic, 0)
    c = kp_consumer(broker.bootstrap)
    try:
        r = c.offsets_for_times({tp: target})[tp]
    finally:
        c.close()
    if want is None:
        assert r is None
    else:
        assert (r.offset, r.timestamp) == (want, BASE + want * STEP)


@pytest.mark.parametrize("delta,want", CASES, ids=CASE_IDS)
def test_offsets_for_times_confluent(broker, ts_topic, delta, want):
    target = BASE + delta
    c = ck_consumer(broker.bootstrap)
    try:
        [r] = c.offsets_for_times([CkTP(ts_topic, 0, target)], timeout=30)
    finally:
        c.close()
    assert r.error is None
    # librdkafka reports "no such record" as offset -1 (OFFSET_END)
    assert r.offset == (-1 if want is None else want)

    admin = ck_admin(broker.bootstrap)
    ctp = CkTP(ts_topic, 0)
    info = admin.list_offsets({ctp: CkOffsetSpec.for_timestamp(target)},
                              request_timeout=30)[ctp].result(timeout=60)
    if want is None:
        assert info.offset == -1
    else:
        assert (info.offset, info.timestamp) == (want, BASE + want * STEP)


def test_offsets_for_times_out_of_order(broker, topic):
    """Timestamps need not grow with offsets: the answer is the first offset (in offset order)
    whose timestamp is >= the target."""
    create_topic(broker.bootstrap, topic, 1)
    stamps = [BASE + 5000, BASE + 1000, BASE + 7000, BASE + 3000, BASE + 9000]
    p = kp_producer(broker.bootstrap, linger_ms=0)
    for i, ts in enumerate(stamps):
        p.send(topic, value=b"o%d" % i, timestamp_ms=ts, partition=0).get(timeout=30)
    p.close(timeout=10)
    tp = KpTP(topic, 0)
    c = kp_consumer(broker.bootstrap)
    try:
        for target, want in [(BASE, 0), (BASE + 2000, 0), (BASE + 5000, 0), (BASE + 6000, 2),
                             (BASE + 8000, 4), (BASE + 9001, None)]:
            r = c.offsets_for_times({tp: target})[tp]
            assert (r and r.offset) == want, f"target {target - BASE}"
    finally:
        c.close()

    # KIP-734: the record with the largest timestamp
    admin = ck_admin(broker.bootstrap)
    ctp = CkTP(topic, 0)
    info = admin.list_offsets({ctp: CkOffsetSpec.max_timestamp()},
                              request_timeout=30)[ctp].result(timeout=60)
    assert (info.offset, info.timestamp) == (4, BASE + 9000)

