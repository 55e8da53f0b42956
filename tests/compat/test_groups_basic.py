"""Consumer-group basics from the client APIs' point of view: explicit commits and committed(),
two members splitting partitions, group admin (describe/list/offsets), offsets across a clean
restart.  (test_groups.py has the harder cases: mixed clients, killed members, raw requests.)

All of this exercises the group coordinator.
"""

import time
import uuid

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka import TopicPartition as CkTP
from kafka import OffsetAndMetadata
from kafka import TopicPartition as KpTP

from helpers import ck_admin, ck_consumer, ck_produce, create_topic, kp_consumer
from strata_testlib import wait_for

pytestmark = pytest.mark.groups


def group_name():
    return f"g-{uuid.uuid4().hex[:8]}"


def test_kp_commit_and_fetch_offsets(broker, topic):
    """Manual assignment + commit in a group (no join): committed() sees the offset."""
    create_topic(broker.bootstrap, topic, 2)
    ck_produce(broker.bootstrap, topic,
               [dict(value=b"x", partition=p) for p in (0, 1) for _ in range(10)])
    g = group_name()
    tp0, tp1 = KpTP(topic, 0), KpTP(topic, 1)
    c = kp_consumer(broker.bootstrap, group_id=g)
    try:
        c.assign([tp0, tp1])
        assert c.committed(tp0) is None
        c.commit({tp0: OffsetAndMetadata(7, "meta-7", -1), tp1: OffsetAndMetadata(3, "", -1)})
    finally:
        c.close()
    c = kp_consumer(broker.bootstrap, group_id=g)
    try:
        c.assign([tp0, tp1])
        assert c.committed(tp0) == 7
        assert c.committed(tp1) == 3
        # With committed offsets, the position starts there (no reset).
        assert c.position(tp0) == 7
        recs = []
        deadline = time.monotonic() + 30
        while len(recs) < 3 + 7 and time.monotonic() < deadline:
            for rs in c.poll(timeout_ms=500).values():
                recs.extend(rs)
        assert sorted((r.partition, r.offset) for r in recs) == \
            [(0, o) for o in range(7, 10)] + [(1, o) for o in range(3, 10)]
    finally:
        c.close()

    admin = ck_admin(broker.bootstrap)
    f = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g)], request_timeout=30)[g]
    res = f.result(timeout=60)
    got = {(tp.topic, tp.partition): (tp.offset, tp.metadata) for tp in res.topic_partitions}
    assert got[(topic, 0)] == (7, "meta-7")
    assert got[(topic, 1)][0] == 3


def _poll_all(consumers, want, timeout=60):
    got = {id(c): [] for c in consumers}
    deadline = time.monotonic() + timeout
    while sum(map(len, got.values())) < want and time.monotonic() < deadline:
        for c in consumers:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got[id(c)].append(m)
    return [got[id(c)] for c in consumers]


def _group_consumer(broker, g, **conf):
    base = {"group.id": g, "auto.offset.reset": "earliest", "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500}
    base.update(conf)
    return ck_consumer(broker.bootstrap, **base)


@pytest.mark.timeout(180)
def test_ck_two_members_split_partitions(broker, topic):
    create_topic(broker.bootstrap, topic, 4)
    g = group_name()
    a = _group_consumer(broker, g)
    b = _group_consumer(broker, g)
    try:
        a.subscribe([topic])
        b.subscribe([topic])

        def balanced():
            for c in (a, b):
                c.poll(0.1)
            pa = {tp.partition for tp in a.assignment()}
            pb = {tp.partition for tp in b.assignment()}
            return pa and pb and not (pa & pb) and (pa | pb) == {0, 1, 2, 3}
        wait_for(balanced, 60, "two members sharing 4 partitions", every=0)

        admin = ck_admin(broker.bootstrap)
        desc = admin.describe_consumer_groups([g], request_timeout=30)[g].result(timeout=60)
        assert len(desc.members) == 2
        assert str(desc.state).endswith("STABLE")

        ck_produce(broker.bootstrap, topic,
                   [dict(value=b"%d" % i, partition=i % 4) for i in range(40)])
        ga, gb = _poll_all([a, b], 40)
        vals = sorted(int(m.value()) for m in ga + gb)
        assert vals == list(range(40)), "each record consumed exactly once by the group"
        assert {m.partition() for m in ga} == {tp.partition for tp in a.assignment()}

        # One member leaves: the other takes over every partition.
        b.close()
        b = None
        wait_for(lambda: a.poll(0.1) is None and len(a.assignment()) == 4, 60,
                 "survivor to own all 4 partitions", every=0)
    finally:
        a.close()
        if b is not None:
            b.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_committed_offsets_survive_restart(broker, topic):
    create_topic(broker.bootstrap, topic, 1)
    ck_produce(broker.bootstrap, topic, [dict(value=b"%d" % i) for i in range(20)])
    g = group_name()
    c = _group_consumer(broker, g, **{"enable.auto.commit": False})
    try:
        c.subscribe([topic])
        [msgs] = _poll_all([c], 12)
        assert [int(m.value()) for m in msgs[:12]] == list(range(12))
        c.commit(offsets=[CkTP(topic, 0, 12)], asynchronous=False)
    finally:
        c.close()

    broker.restart()

    c = _group_consumer(broker, g)
    try:
        c.subscribe([topic])
        [msgs] = _poll_all([c], 8)
        assert [int(m.value()) for m in msgs] == list(range(12, 20))
        committed = c.committed([CkTP(topic, 0)], timeout=30)
        assert committed[0].offset == 12
    finally:
        c.close()

    admin = ck_admin(broker.bootstrap)
    groups = admin.list_consumer_groups(request_timeout=30).result(timeout=60)
    assert g in {x.group_id for x in groups.valid}


def test_unknown_group_has_no_offsets(broker, topic):
    create_topic(broker.bootstrap, topic, 1)
    c = ck_consumer(broker.bootstrap, **{"group.id": group_name()})
    try:
        committed = c.committed([CkTP(topic, 0)], timeout=30)
        assert committed[0].offset < 0  # OFFSET_INVALID: nothing committed
        assert committed[0].error is None
    finally:
        c.close()
