"""Transactions (KIP-98): transactional producers of every client, read_committed consumers, the
last stable offset, fencing, the transaction timeout, consume-transform-produce with
sendOffsetsToTransaction, kafka-transactions.sh, and raw-protocol error codes.

Every expectation below was observed against Apache Kafka 3.9 (see each test).  Each transaction
marker (commit or abort control record) takes one offset: a partition holding a committed
transaction of 10 records has a high watermark of 11.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
from confluent_kafka import (Consumer, IsolationLevel, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import OffsetSpec

from helpers import broker_settings, ck_admin, ck_produce, create_topic, kp_read
from strata_testlib import KAFKA_LIBS, REPO

# Kafka looks for timed-out transactions every 10 s by default; every 500 ms here so that the
# timeout test is short.  Both brokers look for logs to compact every 500 ms instead of every 15 s.
# Only the reference broker reads KAFKA_EXTRA_PROPS (tests/testbed/kafka.sh), only Strata
# STRATA_NODE_ARGS; the timeout test waits up to 30 s for Strata.
KAFKA_PROPS = ("transaction.abort.timed.out.transaction.cleanup.interval.ms=500\n"
               "log.cleaner.backoff.ms=500")
STRATA_ARGS = "--compaction-interval-ms 500"


@pytest.fixture(scope="module")
def _kafka_txn_props():
    with broker_settings(KAFKA_PROPS, STRATA_ARGS):
        yield


@pytest.fixture(scope="module")
def broker(_kafka_txn_props, broker):  # noqa: F811 - conftest's broker, started with the props
    return broker


# ---- helpers -----------------------------------------------------------------------------


_PRODUCERS: list[Producer] = []


@pytest.fixture(autouse=True)
def _close_producers():
    """Close this test's transactional producers (left alone they reconnect, and log about it,
    until garbage-collected, possibly after the broker stopped)."""
    yield
    while _PRODUCERS:
        p = _PRODUCERS.pop()
        try:
            p.purge()
            p.close()
        except KafkaException:
            pass  # a fenced producer's close() fails


def txn_producer(bootstrap: str, tid: str, init: bool = True, **conf) -> Producer:
    base = {"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 5}
    if "transaction.timeout.ms" not in conf:  # librdkafka: socket timeout <= txn timeout + 100
        base["socket.timeout.ms"] = 10000
    base.update(conf)
    p = Producer(base)
    _PRODUCERS.append(p)
    if init:
        p.init_transactions(30)
    return p


def produce_txn(p: Producer, topic: str, values, end: str | None = "commit") -> list[int]:
    """One transaction of `values` to partition 0, flushed; then commit/abort (or leave it open
    with end=None).  Returns the offsets acknowledged for the records."""
    offsets: list = [None] * len(values)

    def cb(i):
        def on_delivery(err, msg):
            assert err is None, err
            offsets[i] = msg.offset()
        return on_delivery

    p.begin_transaction()
    for i, v in enumerate(values):
        p.produce(topic, value=v, partition=0, on_delivery=cb(i))
    assert p.flush(30) == 0
    if end == "commit":
        p.commit_transaction(30)
    elif end == "abort":
        p.abort_transaction(30)
    assert None not in offsets
    return offsets


def read_to_end(bootstrap: str, topic: str, isolation: str, timeout: float = 30, **conf):
    """Read partition 0 from the beginning until the consumer reports the partition's end (the
    high watermark, or for read_committed the last stable offset).  Returns [(offset, value)]
    and the consumer's high watermark for the partition (LSO if read_committed)."""
    c = Consumer(dict({
        "bootstrap.servers": bootstrap, "group.id": "compat-assign-only", "enable.auto.commit": False,
        "enable.auto.offset.store": False, "socket.timeout.ms": 10000,
        "isolation.level": isolation, "enable.partition.eof": True,
        "fetch.wait.max.ms": 50}, **conf))
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        out = []
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, f"no end of partition after {out}"
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    break
                raise KafkaException(m.error())
            out.append((m.offset(), m.value()))
        high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)[1]
        return out, high
    finally:
        c.close()


def values_of(bootstrap, topic, isolation):
    return [v for _, v in read_to_end(bootstrap, topic, isolation)[0]]


def end_offsets(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    """(last stable offset, high watermark) from ListOffsets latest, read_committed and
    read_uncommitted."""
    admin = ck_admin(bootstrap)
    tp = TopicPartition(topic, partition)
    out = []
    for iso in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
        r = admin.list_offsets({tp: OffsetSpec.latest()}, isolation_level=iso,
                               request_timeout=15)
        out.append(r[tp].result(timeout=30).offset)
    return out[0], out[1]


def vals(prefix: str, n: int, start: int = 0) -> list[bytes]:
    return [f"{prefix}{i}".encode() for i in range(start, start + n)]


# ---- confluent-kafka -----------------------------------------------------------------------


def test_confluent_commit_abort_and_lso(broker, topic):
    bs = broker.bootstrap
    create_topic(bs, topic)
    p = txn_producer(bs, f"tx-{topic}")
    c1 = produce_txn(p, topic, vals("c1-", 10), "commit")
    ab = produce_txn(p, topic, vals("ab-", 10), "abort")
    c2 = produce_txn(p, topic, vals("c2-", 5), "commit")
    # Kafka: data at 0-9, commit marker 10, 11-20, abort marker 21, 22-26, commit marker 27.
    assert (c1, ab, c2) == (list(range(10)), list(range(11, 21)), list(range(22, 27)))
    assert end_offsets(bs, topic) == (28, 28)

    got, high = read_to_end(bs, topic, "read_committed")
    assert got == list(zip(c1 + c2, vals("c1-", 10) + vals("c2-", 5)))
    assert high == 28
    got, high = read_to_end(bs, topic, "read_uncommitted")
    assert got == list(zip(c1 + ab + c2, vals("c1-", 10) + vals("ab-", 10) + vals("c2-", 5)))
    assert high == 28

    # An open transaction holds the last stable offset at its first offset.
    opened = produce_txn(p, topic, vals("open-", 3), end=None)
    assert opened == [28, 29, 30]
    assert end_offsets(bs, topic) == (28, 31)
    got, high = read_to_end(bs, topic, "read_committed")
    assert [v for _, v in got] == vals("c1-", 10) + vals("c2-", 5)
    assert high == 28, "a read_committed consumer's high watermark is the LSO"
    got, high = read_to_end(bs, topic, "read_uncommitted")
    assert [o for o, _ in got][-3:] == opened and high == 31

    p.commit_transaction(30)
    assert end_offsets(bs, topic) == (32, 32)
    assert values_of(bs, topic, "read_committed") == \
        vals("c1-", 10) + vals("c2-", 5) + vals("open-", 3)


def test_confluent_fencing(broker, topic):
    """A second producer with the same transactional.id fences the first: its open transaction
    is aborted and its next produce/commit fails fatally with _FENCED (Kafka answers the zombie's
    Produce with INVALID_PRODUCER_EPOCH)."""
    bs = broker.bootstrap
    create_topic(bs, topic)
    tid = f"tx-{topic}"
    a = txn_producer(bs, tid)
    produce_txn(a, topic, vals("a-", 3), end=None)
    b = txn_producer(bs, tid)  # InitProducerId: aborts a's transaction, bumps the epoch

    with pytest.raises(KafkaException) as ei:
        a.produce(topic, value=b"a-late", partition=0)
        a.flush(10)
        a.commit_transaction(10)
    err = ei.value.args[0]
    assert err.fatal() and err.code() == KafkaError._FENCED, err
    with pytest.raises(KafkaException):
        a.commit_transaction(5)

    assert produce_txn(b, topic, vals("b-", 3), "commit") == [4, 5, 6]  # 3 + abort marker
    assert values_of(bs, topic, "read_committed") == vals("b-", 3)
    assert values_of(bs, topic, "read_uncommitted") == vals("a-", 3) + vals("b-", 3)
    assert end_offsets(bs, topic) == (8, 8)


def test_confluent_transaction_timeout(broker, topic):
    """A transaction open longer than transaction.timeout.ms is aborted by the coordinator
    (Kafka also bumps the epoch): the LSO moves past it, and the producer's commit then fails
    fatally with _FENCED.  A new producer with the same id works."""
    bs = broker.bootstrap
    create_topic(bs, topic)
    tid = f"tx-{topic}"
    p = txn_producer(bs, tid, **{"transaction.timeout.ms": 2000})
    assert produce_txn(p, topic, vals("t-", 3), end=None) == [0, 1, 2]
    assert end_offsets(bs, topic) == (0, 3)
    deadline = time.monotonic() + 30
    while (lso_hw := end_offsets(bs, topic))[0] == 0:
        assert time.monotonic() < deadline, "transaction not aborted 30 s after its timeout"
        time.sleep(0.2)
    assert lso_hw == (4, 4)  # the abort marker at 3
    assert values_of(bs, topic, "read_committed") == []
    assert values_of(bs, topic, "read_uncommitted") == vals("t-", 3)

    with pytest.raises(KafkaException) as ei:
        p.commit_transaction(10)
    err = ei.value.args[0]
    assert err.fatal() and err.code() == KafkaError._FENCED, err

    q = txn_producer(bs, tid)
    assert produce_txn(q, topic, [b"after"], "commit") == [4]
    assert values_of(bs, topic, "read_committed") == [b"after"]


def _copy_app(bs, src, dst, group, tid, n, end):
    """consume-transform-produce: read n records of src partition 0 from group's committed
    offset (read_committed), write b"copy-" + value to dst, send the offsets, commit/abort."""
    c = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                  "socket.timeout.ms": 10000, "fetch.wait.max.ms": 50})
    p = txn_producer(bs, tid)
    try:
        c.assign([TopicPartition(src, 0)])
        p.begin_transaction()
        got = []
        deadline = time.monotonic() + 30
        while len(got) < n:
            assert time.monotonic() < deadline, f"read only {len(got)} of {n}"
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                raise KafkaException(m.error())
            got.append(m.value())
            p.produce(dst, value=b"copy-" + m.value(), partition=0)
        p.send_offsets_to_transaction([TopicPartition(src, 0, m.offset() + 1)],
                                      c.consumer_group_metadata(), 30)
        if end == "abort":
            # Sent before the abort: librdkafka purges records still queued when it aborts,
            # and whether they left in time would depend on the broker's speed.
            assert p.flush(30) == 0
        (p.commit_transaction if end == "commit" else p.abort_transaction)(30)
        return got
    finally:
        c.close()


def _committed(bs, group, topic):
    c = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False})
    try:
        (tp,) = c.committed([TopicPartition(topic, 0)], timeout=15)
        assert tp.error is None, tp.error
        return tp.offset
    finally:
        c.close()


@pytest.mark.groups
def test_confluent_consume_transform_produce(broker, topic):
    bs = broker.bootstrap
    src, dst, group, tid = topic, f"{topic}-out", f"g-{topic}", f"tx-{topic}"
    create_topic(bs, src)
    create_topic(bs, dst)
    ck_produce(bs, src, [{"value": v, "partition": 0} for v in vals("in-", 20)])

    assert _copy_app(bs, src, dst, group, tid, 20, "commit") == vals("in-", 20)
    assert _committed(bs, group, src) == 20
    assert values_of(bs, dst, "read_committed") == [b"copy-" + v for v in vals("in-", 20)]

    ck_produce(bs, src, [{"value": v, "partition": 0} for v in vals("in-", 10, 20)])
    assert _copy_app(bs, src, dst, group, tid, 10, "abort") == vals("in-", 10, 20)
    assert _committed(bs, group, src) == 20, "an aborted transaction's offsets were committed"
    assert values_of(bs, dst, "read_committed") == [b"copy-" + v for v in vals("in-", 20)]

    # A rerun starts again from the committed offset.
    assert _copy_app(bs, src, dst, group, tid, 10, "commit") == vals("in-", 10, 20)
    assert _committed(bs, group, src) == 30
    assert values_of(bs, dst, "read_committed") == [b"copy-" + v for v in vals("in-", 30)]
    assert len(values_of(bs, dst, "read_uncommitted")) == 40


# ---- kafka-python --------------------------------------------------------------------------


def test_compaction_removes_aborted_records_and_keeps_committed_ones(broker, topic):
    """A compacted topic with transactions: the cleaner removes the aborted records and the
    committed records later ones supersede, keeps the latest committed value of every key, and
    leaves the partition's transactions working (the last stable offset still advances)."""
    create_topic(broker.bootstrap, topic, 1, {
        "cleanup.policy": "compact", "segment.ms": "300", "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0", "delete.retention.ms": "1000"})
    p = txn_producer(broker.bootstrap, f"compact-{topic}")

    def txn(records, end):
        p.begin_transaction()
        for k, v in records:
            p.produce(topic, key=k, value=v, partition=0)
        assert p.flush(30) == 0
        (p.commit_transaction if end == "commit" else p.abort_transaction)(30)

    txn([(b"a", b"a-aborted"), (b"b", b"b-aborted")], "abort")
    txn([(b"a", b"a-committed-1"), (b"c", b"c-committed")], "commit")
    txn([(b"a", b"a-committed-2")], "commit")
    txn([(b"d", b"d-aborted")], "abort")
    gone = {b"a-aborted", b"b-aborted", b"d-aborted", b"a-committed-1"}
    assert gone <= set(values_of(broker.bootstrap, topic, "read_uncommitted"))

    # Segments close only when later records arrive after segment.ms, and the active one is
    # never cleaned: keep writing fillers (a key of their own, so they compact to one).
    filler = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    deadline = time.monotonic() + (60 if broker.target == "strata" else 120)
    n = 0
    while True:
        filler.produce(topic, key=b"filler", value=b"%d" % n, partition=0)
        filler.flush(10)
        n += 1
        seen = values_of(broker.bootstrap, topic, "read_uncommitted")
        if not gone & set(seen):
            break
        assert time.monotonic() < deadline, f"not cleaned: {seen[:10]}"
        time.sleep(0.5)
    kept = [v for v in seen if not v.isdigit()]
    assert kept == [b"c-committed", b"a-committed-2"], seen
    # (fillers may be compacted away between the two reads)
    committed = values_of(broker.bootstrap, topic, "read_committed")
    assert [v for v in committed if not v.isdigit()] == kept, committed
    # Transactions go on: the last stable offset reaches a new commit.
    txn([(b"e", b"e-committed")], "commit")
    filler.produce(topic, key=b"filler", value=b"last", partition=0)
    filler.flush(10)
    lso, hw = end_offsets(broker.bootstrap, topic)
    assert lso == hw
    assert b"e-committed" in values_of(broker.bootstrap, topic, "read_committed")


def test_kafka_python_transactions(broker, topic):
    from kafka import KafkaProducer

    bs = broker.bootstrap
    create_topic(bs, topic)
    p = KafkaProducer(bootstrap_servers=bs, transactional_id=f"tx-{topic}",
                      request_timeout_ms=15000, max_block_ms=30000)
    try:
        p.init_transactions()
        offsets = []
        for prefix, n, end in (("c1-", 5, "commit"), ("ab-", 5, "abort"), ("c2-", 3, "commit")):
            p.begin_transaction()
            fs = [p.send(topic, value=v, partition=0) for v in vals(prefix, n)]
            p.flush(timeout=30)
            offsets.append([f.get(timeout=30).offset for f in fs])
            (p.commit_transaction if end == "commit" else p.abort_transaction)()
    finally:
        p.close(timeout=10)
    assert offsets == [[0, 1, 2, 3, 4], [6, 7, 8, 9, 10], [12, 13, 14]]
    committed = vals("c1-", 5) + vals("c2-", 3)
    assert values_of(bs, topic, "read_committed") == committed
    assert values_of(bs, topic, "read_uncommitted") == vals("c1-", 5) + vals("ab-", 5) + vals("c2-", 3)
    assert [r.value for r in kp_read(bs, topic, partitions=[0], isolation_level="read_committed")] \
        == committed
    assert end_offsets(bs, topic) == (16, 16)


# ---- Java clients (tests/java Cli) -------------------------------------------------------
#
# The Cli is built against kafka-clients 3.9 and runs unchanged on 4.1 (the jar Kafka Streams
# brings in tests/java-streams): the 4.x producer speaks transaction version 2 (KIP-890's
# second part) wherever the broker finalizes it, as Strata does and Kafka 3.9 does not.

JAVA_DIR = REPO / "tests" / "java" / "target"
JAR = JAVA_DIR / "strata-compat.jar"
CLIENT_LIBS = {"3.9": JAVA_DIR / "libs", "4.1": REPO / "tests" / "java-streams" / "target" / "libs"}
TARGET = os.environ.get("STRATA_TEST_TARGET", "strata")


@pytest.fixture(scope="module", params=sorted(CLIENT_LIBS))
def java_client(request):
    return request.param


@pytest.fixture(scope="module")
def cli(broker, java_client):
    libs = CLIENT_LIBS[java_client]
    if shutil.which("java") is None or not JAR.is_file() or not libs.is_dir():
        pytest.fail(f"Java CLI not built ({JAR}, {libs}): run tests/testbed/install.sh")

    def run(cmd, *args, expect_rc=0, timeout=120):
        argv = ["java", "-cp", f"{JAR}:{libs}/*", "io.strata.compat.Cli", cmd,
                "--bootstrap", broker.bootstrap, *map(str, args)]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        if expect_rc is not None:
            assert r.returncode == expect_rc, (
                f"{cmd} exited {r.returncode}, wanted {expect_rc}\nstdout:\n{r.stdout[-3000:]}"
                f"\nstderr:\n{r.stderr[-3000:]}")
        return lines
    return run


def transaction_version_2(java_client: str) -> bool:
    """Whether the Java producer ends every transaction with an epoch bump (KIP-890)."""
    return java_client == "4.1" and TARGET == "strata"


def test_java_transactions(cli, broker, topic, java_client):
    out = cli("txn-produce", "--topic", topic, "--transactional-id", f"tx-{topic}",
              "--plan", "commit:10,abort:10,commit:5")
    assert out == [
        {"step": 0, "action": "commit", "offsets": list(range(10))},
        {"step": 1, "action": "abort", "offsets": list(range(11, 21))},
        {"step": 2, "action": "commit", "offsets": list(range(22, 27))},
        {"summary": True, "produced": 25},
    ]
    committed = [f"value-{i}" for i in list(range(10)) + list(range(20, 25))]
    out = cli("consume", "--topic", topic, "--partition", 0, "--isolation", "read_committed",
              "--until-end")
    assert [(r["offset"], r["value"]) for r in out[:-1]] == \
        list(zip(list(range(10)) + list(range(22, 27)), committed))
    assert out[-1] == {"summary": True, "consumed": 15, "end": {"0": 28}, "position": {"0": 28}}
    out = cli("consume", "--topic", topic, "--partition", 0, "--until-end")
    assert [r["value"] for r in out[:-1]] == [f"value-{i}" for i in range(25)]
    # ... and librdkafka agrees.
    assert values_of(broker.bootstrap, topic, "read_committed") == [v.encode() for v in committed]
    # Under transaction version 2 each of the three ends bumped the epoch, the markers
    # carrying the new one; under version 1 the epoch stays where InitProducerId left it.
    (p,) = table(transactions_tool(broker.bootstrap, "describe-producers", "--topic", topic,
                                   "--partition", "0").stdout)
    assert p["ProducerEpoch"] == ("3" if transaction_version_2(java_client) else "0")
    assert p["CurrentTransactionStartOffset"] == "None"


@pytest.mark.groups
def test_java_consume_transform_produce(cli, broker, topic):
    bs = broker.bootstrap
    src, dst, group, tid = topic, f"{topic}-out", f"g-{topic}", f"tx-{topic}"
    create_topic(bs, src)
    create_topic(bs, dst)
    ck_produce(bs, src, [{"value": v, "partition": 0} for v in vals("in-", 20)])
    args = ("--input", src, "--output", dst, "--group", group, "--transactional-id", tid)
    assert cli("txn-copy", *args, "--count", 15) == \
        [{"copied": 15, "start": 0, "next": 15, "action": "commit"}]
    assert cli("txn-copy", *args, "--count", 5, "--action", "abort") == \
        [{"copied": 5, "start": 15, "next": 20, "action": "abort"}]
    assert _committed(bs, group, src) == 15
    assert cli("txn-copy", *args, "--count", 5) == \
        [{"copied": 5, "start": 15, "next": 20, "action": "commit"}]
    assert _committed(bs, group, src) == 20
    assert values_of(bs, dst, "read_committed") == [b"copy-" + v for v in vals("in-", 20)]
    assert len(values_of(bs, dst, "read_uncommitted")) == 25


# ---- kafka-transactions.sh -----------------------------------------------------------------

HANGING_PRODUCER = """
import json, sys, time
from confluent_kafka import Producer
bs, topic, tid = sys.argv[1:4]
p = Producer({"bootstrap.servers": bs, "transactional.id": tid, "linger.ms": 5,
              "transaction.timeout.ms": 600000})
p.init_transactions(30)
p.begin_transaction()
offsets = []
for i in range(3):
    p.produce(topic, value=b"hang-%d" % i, partition=0,
              on_delivery=lambda err, msg: offsets.append(None if err else msg.offset()))
assert p.flush(30) == 0
print(json.dumps(offsets), flush=True)
time.sleep(600)
"""


def transactions_tool(bs: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    if not KAFKA_LIBS.is_dir():
        pytest.fail(f"{KAFKA_LIBS} missing: run tests/testbed/install.sh")
    r = subprocess.run(["java", "-Xmx256m", "-cp", f"{KAFKA_LIBS}/*",
                        "org.apache.kafka.tools.TransactionsCommand", "--bootstrap-server", bs,
                        *args], capture_output=True, text=True, timeout=120)
    if ok:
        assert r.returncode == 0, f"{' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def table(out: str) -> list[dict]:
    """The tool's tab-separated tables as dicts by column name."""
    lines = [ln for ln in out.splitlines() if "\t" in ln]
    head = [h.strip() for h in lines[0].split("\t")]
    return [dict(zip(head, (c.strip() for c in ln.split("\t")))) for ln in lines[1:]]


def test_kafka_transactions_tool(broker, topic):
    bs = broker.bootstrap
    create_topic(bs, topic)
    done_tid, hang_tid = f"done-{topic}", f"hang-{topic}"
    done = txn_producer(bs, done_tid)
    assert produce_txn(done, topic, vals("c-", 5), "commit") == [0, 1, 2, 3, 4]

    # A transaction whose producer dies (SIGKILL) without ending it, with a 10-minute timeout.
    proc = subprocess.Popen([sys.executable, "-c", HANGING_PRODUCER, bs, topic, hang_tid],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        hang_offsets = json.loads(proc.stdout.readline() or "null")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert hang_offsets == [6, 7, 8]
    assert end_offsets(bs, topic) == (6, 9)

    rows = {r["TransactionalId"]: r for r in table(transactions_tool(bs, "list").stdout)}
    assert rows[done_tid]["TransactionState"] == "CompleteCommit"
    assert rows[hang_tid]["TransactionState"] == "Ongoing"
    assert rows[hang_tid]["Coordinator"] == "1"

    (d,) = table(transactions_tool(bs, "describe", "--transactional-id", hang_tid).stdout)
    assert d["TransactionState"] == "Ongoing" and d["TransactionTimeoutMs"] == "600000"
    assert d["ProducerId"] == rows[hang_tid]["ProducerId"] and d["ProducerEpoch"] == "0"
    assert d["TopicPartitions"] == f"{topic}-0"

    producers = {r["ProducerId"]: r for r in table(transactions_tool(
        bs, "describe-producers", "--topic", topic, "--partition", "0").stdout)}
    assert set(producers) == {rows[done_tid]["ProducerId"], rows[hang_tid]["ProducerId"]}
    assert producers[rows[hang_tid]["ProducerId"]]["CurrentTransactionStartOffset"] == "6"
    assert producers[rows[hang_tid]["ProducerId"]]["LastSequence"] == "2"
    assert producers[rows[done_tid]["ProducerId"]]["CurrentTransactionStartOffset"] == "None"

    transactions_tool(bs, "abort", "--topic", topic, "--partition", "0", "--start-offset", "6")
    assert end_offsets(bs, topic) == (10, 10)  # abort marker at 9
    assert values_of(bs, topic, "read_committed") == vals("c-", 5)
    assert values_of(bs, topic, "read_uncommitted") == vals("c-", 5) + vals("hang-", 3)

    r = transactions_tool(bs, "abort", "--topic", topic, "--partition", "0", "--start-offset",
                          "6", ok=False)
    assert r.returncode == 1
    assert "Could not find any open transactions starting at offset 6" in r.stdout + r.stderr


# ---- raw protocol: Kafka's error codes for bad transactional requests ----------------------

INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
INVALID_PRODUCER_ID_MAPPING = 49
CONCURRENT_TRANSACTIONS = 51
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
INVALID_RECORD = 87
PRODUCER_FENCED = 90
UNKNOWN_TOPIC_OR_PARTITION = 3


def _str(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _recv(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "connection closed"
        buf += chunk
    return buf


def _request(bootstrap: str, api_key: int, version: int, body: bytes) -> bytes:
    host, port = bootstrap.rsplit(":", 1)
    frame = struct.pack(">hhi", api_key, version, 7) + _str("raw-txn-test") + body
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", _recv(s, 4))[0]
        resp = _recv(s, size)
    assert struct.unpack(">i", resp[:4])[0] == 7
    return resp[4:]


def _wait_txn_coordinator(bs, tid):
    """FindCoordinator v1 (key type 1) until it answers without error: the first transactional
    request on a fresh broker may find the coordinator still loading."""
    deadline = time.monotonic() + 30
    while True:
        body = _request(bs, 10, 1, _str(tid) + struct.pack(">b", 1))
        (err,) = struct.unpack(">h", body[4:6])
        if err == 0:
            return
        assert time.monotonic() < deadline, f"FindCoordinator(transaction) error {err}"
        time.sleep(0.2)


def _init_producer_id(bs, tid, timeout_ms=60000):
    """InitProducerId v0 -> (producer id, epoch); retried while the coordinator is busy
    (CONCURRENT_TRANSACTIONS while it aborts an open transaction, coordinator loading)."""
    deadline = time.monotonic() + 30
    while True:
        body = _request(bs, 22, 0, _str(tid) + struct.pack(">i", timeout_ms))
        err, pid, epoch = struct.unpack(">hqh", body[4:16])
        if err == 0:
            return pid, epoch
        assert err in (CONCURRENT_TRANSACTIONS, 14, 15) and time.monotonic() < deadline, err
        time.sleep(0.1)


def _end_txn(bs, tid, pid, epoch, commit, version=0):
    """EndTxn -> error code, retried (as clients do) while it is CONCURRENT_TRANSACTIONS: the
    previous EndTxn of this id is still writing its markers."""
    deadline = time.monotonic() + 30
    while True:
        body = _request(bs, 26, version, _str(tid) + struct.pack(">qhb", pid, epoch, int(commit)))
        (err,) = struct.unpack(">h", body[4:6])
        if err != CONCURRENT_TRANSACTIONS or time.monotonic() > deadline:
            return err
        time.sleep(0.05)


def _add_partitions(bs, tid, pid, epoch, topic, partitions, version=0):
    """AddPartitionsToTxn v0-v3 -> {partition: error code}."""
    body = _str(tid) + struct.pack(">qhi", pid, epoch, 1) + _str(topic)
    body += struct.pack(">i", len(partitions)) + b"".join(struct.pack(">i", p) for p in partitions)
    resp = _request(bs, 24, version, body)
    pos = 4 + 4  # throttle, topic count (1)
    (n,) = struct.unpack(">h", resp[pos:pos + 2])
    pos += 2 + n
    (count,) = struct.unpack(">i", resp[pos:pos + 4])
    pos += 4
    return dict(struct.unpack(">ih", resp[pos + 6 * i:pos + 6 * i + 6]) for i in range(count))


def _add_offsets(bs, tid, pid, epoch, group):
    body = _request(bs, 25, 0, _str(tid) + struct.pack(">qh", pid, epoch) + _str(group))
    return struct.unpack(">h", body[4:6])[0]


def _varint(v: int) -> bytes:
    v = (v << 1) ^ (v >> 63)
    out = b""
    while True:
        b, v = v & 0x7F, v >> 7
        if not v:
            return out + bytes([b])
        out += bytes([b | 0x80])


def _batch(records, attributes, pid=-1, epoch=-1, seq=-1) -> bytes:
    """A v2 record batch (uncompressed) of (key, value) records with the given attributes
    (0x10 transactional, 0x20 control)."""
    from kafka.record.util import calc_crc32c

    recs = b""
    for i, (k, v) in enumerate(records):
        r = b"\x00" + _varint(0) + _varint(i)
        r += _varint(len(k)) + k
        r += _varint(len(v)) + v
        r += _varint(0)
        recs += _varint(len(r)) + r
    ts = int(time.time() * 1000)
    tail = struct.pack(">hiqqqhii", attributes, len(records) - 1, ts, ts, pid, epoch, seq,
                       len(records)) + recs
    after_len = struct.pack(">ibI", 0, 2, calc_crc32c(tail)) + tail
    return struct.pack(">qi", 0, len(after_len)) + after_len


def _produce(bs, topic, batch, tid=None) -> tuple[int, int]:
    """Produce v3 of one batch to partition 0 -> (error code, base offset)."""
    body = _str(tid) + struct.pack(">hii", -1, 10000, 1) + _str(topic)
    body += struct.pack(">iii", 1, 0, len(batch)) + batch
    resp = _request(bs, 0, 3, body)
    pos = 4  # topic count (1)
    (n,) = struct.unpack(">h", resp[pos:pos + 2])
    pos += 2 + n + 4  # name, partition count (1)
    _, err, base = struct.unpack(">ihq", resp[pos:pos + 14])
    return err, base


CONTROL_COMMIT = (struct.pack(">hh", 0, 1), struct.pack(">hi", 0, 0))


def test_raw_unknown_transactional_id(broker, topic):
    bs = broker.bootstrap
    create_topic(bs, topic)
    tid = f"nosuch-{topic}"
    _wait_txn_coordinator(bs, tid)
    for version in (0, 2):
        assert _end_txn(bs, tid, 12345, 0, True, version) == INVALID_PRODUCER_ID_MAPPING
        assert _end_txn(bs, tid, 12345, 0, False, version) == INVALID_PRODUCER_ID_MAPPING
    assert _add_partitions(bs, tid, 12345, 0, topic, [0]) == {0: INVALID_PRODUCER_ID_MAPPING}
    assert _add_offsets(bs, tid, 12345, 0, f"g-{topic}") == INVALID_PRODUCER_ID_MAPPING


def test_raw_transaction_states_and_epochs(broker, topic):
    bs = broker.bootstrap
    create_topic(bs, topic)
    tid = f"raw-{topic}"
    _wait_txn_coordinator(bs, tid)
    pid, epoch = _init_producer_id(bs, tid)
    assert pid >= 0 and epoch == 0
    # No transaction open: EndTxn either way is INVALID_TXN_STATE.
    assert _end_txn(bs, tid, pid, epoch, True) == INVALID_TXN_STATE
    assert _end_txn(bs, tid, pid, epoch, False) == INVALID_TXN_STATE
    assert _end_txn(bs, tid, pid + 1000, epoch, True) == INVALID_PRODUCER_ID_MAPPING

    # A second InitProducerId bumps the epoch; the old one is fenced: INVALID_PRODUCER_EPOCH
    # before EndTxn/AddPartitionsToTxn v2, PRODUCER_FENCED from v2 (KIP-588).
    assert _init_producer_id(bs, tid) == (pid, 1)
    assert _end_txn(bs, tid, pid, 0, True, version=0) == INVALID_PRODUCER_EPOCH
    assert _end_txn(bs, tid, pid, 0, True, version=2) == PRODUCER_FENCED
    assert _add_partitions(bs, tid, pid, 0, topic, [0], version=0) == {0: INVALID_PRODUCER_EPOCH}
    assert _add_partitions(bs, tid, pid, 0, topic, [0], version=2) == {0: PRODUCER_FENCED}

    assert _add_partitions(bs, tid, pid, 1, topic, [7]) == {7: UNKNOWN_TOPIC_OR_PARTITION}
    assert _add_partitions(bs, tid, pid, 1, topic, [0]) == {0: 0}
    assert _end_txn(bs, tid, pid, 1, False) == 0
    assert _end_txn(bs, tid, pid, 1, False) == 0, "a retried EndTxn(abort) must succeed"
    assert _end_txn(bs, tid, pid, 1, True) == INVALID_TXN_STATE

    # InitProducerId while a transaction is open aborts it (CONCURRENT_TRANSACTIONS until
    # the abort is done) and bumps the epoch twice (the abort, then the new producer).
    assert _add_partitions(bs, tid, pid, 1, topic, [0]) == {0: 0}
    assert _init_producer_id(bs, tid) == (pid, 3)
    assert _end_txn(bs, tid, pid, 1, True) == INVALID_PRODUCER_EPOCH
    # The log holds two abort markers (offsets 0 and 1) and no data.
    assert end_offsets(bs, topic) == (2, 2)
    assert values_of(bs, topic, "read_uncommitted") == []


def test_raw_produce_refused(broker, topic):
    """Clients may not write control batches (INVALID_RECORD), and a transactional batch needs
    a transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED) and its partition added to the
    transaction first (INVALID_TXN_STATE: Kafka 3.6+ verifies, KIP-890)."""
    bs = broker.bootstrap
    create_topic(bs, topic)
    tid = f"raw-{topic}"
    _wait_txn_coordinator(bs, tid)
    assert _produce(bs, topic, _batch([CONTROL_COMMIT], 0x20)) == (INVALID_RECORD, -1)

    pid, epoch = _init_producer_id(bs, tid)
    data = _batch([(b"k", b"v")], 0x10, pid, epoch, 0)
    assert _produce(bs, topic, data, tid=None) == (TRANSACTIONAL_ID_AUTHORIZATION_FAILED, -1)
    assert _produce(bs, topic, data, tid=tid) == (INVALID_TXN_STATE, -1)

    assert _add_partitions(bs, tid, pid, epoch, topic, [0]) == {0: 0}
    ctrl = _batch([CONTROL_COMMIT], 0x30, pid, epoch, 0)
    assert _produce(bs, topic, ctrl, tid=tid) == (INVALID_RECORD, -1)
    assert _produce(bs, topic, data, tid=tid) == (0, 0)
    assert end_offsets(bs, topic) == (0, 1)
    assert _end_txn(bs, tid, pid, epoch, True) == 0
    assert values_of(bs, topic, "read_committed") == [b"v"]
    assert end_offsets(bs, topic) == (2, 2)


def _uvarint(v: int) -> bytes:
    out = b""
    while v >= 0x80:
        out += bytes([(v & 0x7F) | 0x80])
        v >>= 7
    return out + bytes([v])


def _read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, pos
        shift += 7


def _cstr(s: str | None) -> bytes:
    if s is None:
        return b"\x00"
    b = s.encode()
    return _uvarint(len(b) + 1) + b


def _flexible_request(bootstrap: str, api_key: int, version: int, body: bytes) -> bytes:
    """A request with header v2 (tagged fields); the response body after header v1."""
    return _request(bootstrap, api_key, version, b"\x00" + body)[1:]


def _end_txn_v5(bs, tid, pid, epoch, commit) -> tuple[int, int, int]:
    """EndTxn v5 -> (error code, producer id, epoch) for the next transaction."""
    deadline = time.monotonic() + 30
    while True:
        body = _flexible_request(bs, 26, 5, _cstr(tid) + struct.pack(">qhb", pid, epoch,
                                                                      int(commit)) + b"\x00")
        err, next_pid, next_epoch = struct.unpack(">hqh", body[4:16])
        if err != CONCURRENT_TRANSACTIONS or time.monotonic() > deadline:
            return err, next_pid, next_epoch
        time.sleep(0.05)


def _produce_v12(bs, topic, batch, tid) -> tuple[int, int]:
    """Produce v12 of one batch to partition 0 -> (error code, base offset)."""
    part = struct.pack(">i", 0) + _uvarint(len(batch) + 1) + batch + b"\x00"
    body = _cstr(tid) + struct.pack(">hi", -1, 10000) + _uvarint(2) + _cstr(topic)
    body += _uvarint(2) + part + b"\x00" + b"\x00"
    resp = _flexible_request(bs, 0, 12, body)
    _, pos = _read_uvarint(resp, 0)  # topic count (1)
    n, pos = _read_uvarint(resp, pos)
    pos += n - 1  # name
    _, pos = _read_uvarint(resp, pos)  # partition count (1)
    _, err, base = struct.unpack(">ihq", resp[pos:pos + 14])
    return err, base


@pytest.mark.skipif(TARGET != "strata", reason="Kafka 3.9 has no transaction version 2")
def test_raw_transaction_version_2(broker, topic):
    """KIP-890's second part on the wire: Produce v12 adds its partition to the transaction
    (no AddPartitionsToTxn), and EndTxn v5 bumps the epoch, answering with the one the next
    transaction uses; a retry under the old epoch gets the same answer, and a write under it
    is refused."""
    bs = broker.bootstrap
    create_topic(bs, topic)
    tid = f"tv2-{topic}"
    _wait_txn_coordinator(bs, tid)
    pid, epoch = _init_producer_id(bs, tid)
    first = _batch([(b"k", b"v0")], 0x10, pid, epoch, 0)
    assert _produce(bs, topic, first, tid=tid) == (INVALID_TXN_STATE, -1), "v3 still verifies"
    assert _produce_v12(bs, topic, first, tid) == (0, 0)
    assert _end_txn_v5(bs, tid, pid, epoch, True) == (0, pid, epoch + 1)
    assert _end_txn_v5(bs, tid, pid, epoch, True) == (0, pid, epoch + 1), "a retry"
    assert _end_txn_v5(bs, tid, pid, epoch, False)[0] == INVALID_TXN_STATE
    assert end_offsets(bs, topic) == (2, 2)

    late = _batch([(b"k", b"late")], 0x10, pid, epoch, 1)
    assert _produce_v12(bs, topic, late, tid)[0] == INVALID_PRODUCER_EPOCH
    second = _batch([(b"k", b"v1")], 0x10, pid, epoch + 1, 0)
    assert _produce_v12(bs, topic, second, tid) == (0, 2)
    assert end_offsets(bs, topic) == (2, 3)
    assert _end_txn_v5(bs, tid, pid, epoch + 1, False) == (0, pid, epoch + 2)
    assert values_of(bs, topic, "read_committed") == [b"v0"]
    assert end_offsets(bs, topic) == (4, 4)


# ---- crash recovery ------------------------------------------------------------------------


def test_transactions_survive_a_sigkill(broker, topic):
    """SIGKILL with one transaction committed and another open: after the restart the committed
    records are there, the open transaction is aborted once its timeout passes (its state came
    back from __transaction_state), and both transactional ids carry on."""
    bs = broker.bootstrap
    create_topic(bs, topic)
    done = txn_producer(bs, f"done-{topic}")
    produce_txn(done, topic, [b"c%d" % i for i in range(5)])
    hanging = txn_producer(bs, f"hang-{topic}", **{"transaction.timeout.ms": 5000,
                                                   "socket.timeout.ms": 5000})
    produce_txn(hanging, topic, [b"h%d" % i for i in range(3)], end=None)
    assert end_offsets(bs, topic)[1] == 9  # 5 records, a marker, 3 open records
    broker.restart(kill=True)

    deadline = time.monotonic() + 40
    while True:
        got, lso = read_to_end(bs, topic, "read_committed")
        if lso >= 10:  # the abort marker of the open transaction is written
            break
        assert time.monotonic() < deadline, f"the open transaction was never aborted: LSO {lso}"
        time.sleep(0.5)
    assert [v for _, v in got] == [b"c%d" % i for i in range(5)]

    for tid, value in ((f"done-{topic}", b"after"), (f"hang-{topic}", b"again")):
        produce_txn(txn_producer(bs, tid), topic, [value])
    assert values_of(bs, topic, "read_committed") == \
        [b"c%d" % i for i in range(5)] + [b"after", b"again"]
    assert len(values_of(bs, topic, "read_uncommitted")) == 10
