"""Kafka Streams 4.x with processing.guarantee=exactly_once_v2 (tests/java-streams, built by
install.sh): a word count is SIGKILLed part-way through its input and restarted, and a
read_committed consumer of its output must see every word's count go up strictly, never past the
true count, and end at exactly the true count.  The app runs without a record cache, so every
increment is an output record: each word's committed counts must be exactly 1, 2, ..., n.

What this exercises on the broker, besides produce/fetch: the transactional producer of each
stream thread (InitProducerId with a transactional.id, AddPartitionsToTxn, TxnOffsetCommit through
sendOffsetsToTransaction, EndTxn, fencing/abort of the killed instance's open transaction), the
consumer group (JoinGroup/SyncGroup with the Streams assignor, OffsetFetch with require_stable),
read_committed fetches and the last stable offset on the repartition and changelog topics,
and CreateTopics of the internal topics (replication factor -1: the broker's default).  The input
is produced while the app runs, and the app is killed while it still flows, in a transaction
with records on the broker.  The restart runs either
  - on the same state directory: the same process id, so the same transactional.id, whose
    InitProducerId aborts the killed instance's open transaction at once (the state store has no
    checkpoint after a crash under exactly-once, so it is still rebuilt from the changelog); or
  - on a fresh state directory: the counts are restored from the changelog topic
    (read_committed) under a new transactional.id, so the killed instance's open transaction ends
    only by the transaction timeout.

Each case takes ~20 s against Apache Kafka 3.9 (and against Strata).  Marked slow and groups.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections import Counter

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from helpers import ck_consumer, ck_producer, create_topic
from strata_testlib import REPO, Proc

pytestmark = [pytest.mark.slow, pytest.mark.groups]

STREAMS_DIR = REPO / "tests" / "java-streams" / "target"
JAR = STREAMS_DIR / "strata-streams.jar"

# Streams sets transaction.timeout.ms=10000 for exactly-once; the killed instance's transaction is
# aborted when the broker next looks for timed-out transactions (every 10 s by default: every
# 500 ms here).  Only the reference broker reads KAFKA_EXTRA_PROPS (tests/testbed/kafka.sh).
KAFKA_PROPS = "transaction.abort.timed.out.transaction.cleanup.interval.ms=500"

PARTITIONS = 3
N_LINES = 2000
VOCAB = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango").split()
FEED_CHUNK, FEED_PAUSE = 20, 0.1   # input: 20 lines every 100 ms, ~10 s for all of it
KILL_AFTER = 0.2         # SIGKILL once this share of all words is counted in committed output
DONE_TIMEOUT = 75        # seconds from the restart until every count is final


@pytest.fixture(scope="module")
def _kafka_txn_props():
    old = os.environ.get("KAFKA_EXTRA_PROPS")
    os.environ["KAFKA_EXTRA_PROPS"] = f"{old}\n{KAFKA_PROPS}" if old else KAFKA_PROPS
    yield
    if old is None:
        os.environ.pop("KAFKA_EXTRA_PROPS", None)
    else:
        os.environ["KAFKA_EXTRA_PROPS"] = old


@pytest.fixture(scope="module")
def broker(_kafka_txn_props, broker):  # noqa: F811 - conftest's broker, started with the props
    return broker


def _lines() -> list[str]:
    rnd = random.Random(20240917)
    return [" ".join(rnd.choice(VOCAB) for _ in range(rnd.randint(1, 8))) for _ in range(N_LINES)]


class OutputReader:
    """Reads a topic from the beginning with one consumer for the whole test and keeps every
    word's sequence of counts, in offset order (a word always lands in one partition); with
    counts=False it only counts the records."""

    def __init__(self, bootstrap: str, topic: str, isolation: str, counts: bool = True):
        self.c = ck_consumer(bootstrap, **{"isolation.level": isolation, "fetch.wait.max.ms": 50})
        md = self.c.list_topics(topic, timeout=10).topics.get(topic)  # the partitions' leaders
        assert md is not None and md.error is None and len(md.partitions) == PARTITIONS, \
            f"no metadata for {topic}: {md and (md.error, md.partitions)}"
        self.c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        self.topic = topic
        self.counts = counts
        self.seqs: dict[str, list[int]] = {}
        self.records = 0

    def poll(self, seconds: float = 0.5):
        deadline = time.monotonic() + seconds
        while True:
            for m in self.c.consume(num_messages=1000, timeout=0.1):
                if m.error():
                    raise KafkaException(m.error())
                self.records += 1
                if self.counts:
                    self.seqs.setdefault(m.key().decode(), []).append(int(m.value().decode()))
            if time.monotonic() >= deadline:
                return

    def last(self) -> dict[str, int]:
        return {w: s[-1] for w, s in self.seqs.items()}

    def counted(self) -> int:
        return sum(self.last().values())

    def read_to_end(self, timeout: float = 30):
        """Poll until the position of every partition reached its end (the LSO when
        read_committed) as of now."""
        ends = {p: self.c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10,
                                                cached=False)[1] for p in range(PARTITIONS)}
        deadline = time.monotonic() + timeout
        while True:
            self.poll(0.3)
            pos = {tp.partition: tp.offset for tp in self.c.position(
                [TopicPartition(self.topic, p) for p in range(PARTITIONS)])}
            # A partition ending in a transaction marker leaves the position at the marker's
            # offset + 1 only once the marker was fetched; a position of -1001 means nothing read.
            if all(ends[p] == 0 or pos[p] >= ends[p] for p in range(PARTITIONS)):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"output not read to its end in {timeout}s: position {pos}, "
                                     f"end {ends}")

    def close(self):
        self.c.close()


class Feeder(threading.Thread):
    """Produces the input lines in small chunks at a steady rate, so that the application is
    killed, and restarted, while its input still flows."""

    def __init__(self, bootstrap: str, topic: str, lines: list[str]):
        super().__init__(daemon=True)
        self.p = ck_producer(bootstrap, **{"enable.idempotence": True})
        self.topic, self.lines = topic, lines
        self.sent = 0
        self.errors: list = []
        self.stop_flag = threading.Event()

    def _cb(self, err, _msg):
        if err is not None:
            self.errors.append(err)

    def run(self):
        for i in range(0, len(self.lines), FEED_CHUNK):
            if self.stop_flag.is_set():
                return
            for j, line in enumerate(self.lines[i:i + FEED_CHUNK], start=i):
                self.p.produce(self.topic, key=str(j).encode(), value=line.encode(),
                               on_delivery=self._cb)
            self.p.flush(30)
            self.sent = min(i + FEED_CHUNK, len(self.lines))
            time.sleep(FEED_PAUSE)

    def finish(self, timeout: float = 60):
        self.join(timeout)
        assert not self.is_alive(), f"input not produced in {timeout}s ({self.sent} lines)"
        assert self.p.flush(30) == 0 and not self.errors, f"input produce failed: {self.errors[:5]}"


def internal_topics_summary(bootstrap: str, app_id: str) -> str:
    """Committed and all records of the app's repartition and changelog topics."""
    out = []
    for t in (f"{app_id}-words-repartition",
              f"{app_id}-counts-changelog"):
        n = {}
        for iso in ("read_committed", "read_uncommitted"):
            try:
                r = OutputReader(bootstrap, t, iso, counts=False)
            except AssertionError as e:
                n[iso] = str(e)
                continue
            try:
                r.read_to_end()
                n[iso] = r.records
            except AssertionError as e:
                n[iso] = str(e)
            finally:
                r.close()
        out.append(f"{t.removeprefix(app_id + '-')}: {n['read_committed']} committed, "
                   f"{n['read_uncommitted']} in all")
    return "; ".join(out)


@pytest.mark.parametrize("restart", ["same-state-dir", "fresh-state-dir"])
def test_streams_eos_word_count(broker, topic, tmp_path, restart):
    if shutil.which("java") is None or not JAR.is_file():
        pytest.fail(f"Kafka Streams app not built ({JAR}): run tests/testbed/install.sh")
    bs = broker.bootstrap
    inp, out, app_id = f"{topic}-in", f"{topic}-out", f"{topic}-app"
    create_topic(bs, inp, PARTITIONS)
    create_topic(bs, out, PARTITIONS)

    lines = _lines()
    expected = Counter(w for line in lines for w in line.split())
    total = sum(expected.values())
    log = tmp_path / "streams.log"

    def app(state_dir, commit_ms):
        argv = ["java", "-Xmx256m", "-cp", f"{JAR}:{STREAMS_DIR / 'libs'}/*",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
                "-Dorg.slf4j.simpleLogger.showDateTime=true",
                "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
                "io.strata.streams.WordCount", "--bootstrap", bs, "--app-id", app_id,
                "--input", inp, "--output", out, "--state-dir", state_dir,
                "--commit-interval-ms", str(commit_ms)]
        return Proc("streams", argv, log)

    committed = OutputReader(bs, out, "read_committed")
    uncommitted = OutputReader(bs, out, "read_uncommitted")
    feeder = Feeder(bs, inp, lines)
    first = second = None

    def diag() -> str:
        last = committed.last()
        wrong = {w: (last.get(w), n) for w, n in expected.items() if last.get(w) != n}
        return (f"\ninput: {feeder.sent}/{N_LINES} lines produced; committed output: "
                f"{committed.records} records, {committed.counted()}/{total} words counted; "
                f"read_uncommitted saw {uncommitted.records} records"
                f"\nwords not at their count (seen, expected): {wrong}"
                f"\n---- streams app log tail ({log}):\n" + "\n".join(
                    line for line in log.read_text(errors="replace").splitlines()[-80:]))

    try:
        # Run 1: once it is running, feed the input; SIGKILL once part of it is counted.  Its
        # transactions last a second, so that the kill lands in one with records on the broker.
        t0 = time.monotonic()
        first = app(tmp_path / "state-1", 1000).start()
        first.wait_log("-> RUNNING", timeout=60)
        feeder.start()
        while committed.counted() < KILL_AFTER * total:
            assert first.running(), "the Streams app exited on its own" + diag()
            assert time.monotonic() - t0 < 60, \
                f"no {KILL_AFTER:.0%} of the words counted in 60 s" + diag()
            committed.poll(0.1)
        # Kill while an open transaction has output records on the broker (seen by
        # read_uncommitted, not yet by read_committed), which must then be aborted.
        t_open = time.monotonic()
        while time.monotonic() - t_open < 5:
            committed.poll(0.05)
            uncommitted.poll(0.05)
            if uncommitted.records > committed.records:
                break
        first.kill()
        at_kill, fed_at_kill = committed.counted(), feeder.sent
        assert fed_at_kill < N_LINES, "all input was produced before the kill" + diag()

        # Run 2, on the same or a fresh state directory (see the module's docstring).
        t1 = time.monotonic()
        second = app(tmp_path / ("state-1" if restart == "same-state-dir" else "state-2"),
                     100).start()
        feeder.finish()
        while committed.last() != dict(expected):
            assert second.running(), "the restarted Streams app exited on its own" + diag()
            assert time.monotonic() - t1 < DONE_TIMEOUT, \
                f"counts not final {DONE_TIMEOUT}s after the restart" + diag()
            committed.poll(0.5)
            last = committed.last()
            over = {w: (last[w], expected.get(w)) for w in last if last[w] > expected.get(w, 0)}
            assert not over, f"counts past the true count: {over}" + diag()
        print(f"SIGKILL {t1 - t0:.1f}s after the start, with {fed_at_kill}/{N_LINES} lines fed "
              f"and {at_kill}/{total} words counted; counts final "
              f"{time.monotonic() - t1:.1f}s after the restart")

        # A clean stop commits whatever is open; then the whole committed output must hold
        # nothing more.
        rc = second.stop(timeout=60)
        assert rc == 0, f"the Streams app exited with {rc} on SIGTERM" + diag()
        committed.read_to_end()
        uncommitted.read_to_end()

        # The records of aborted transactions: read_uncommitted sees them.
        print(f"output topic: {committed.records} records committed, {uncommitted.records} "
              f"in all; " + internal_topics_summary(bs, app_id))
        assert uncommitted.records > committed.records, \
            "the kill aborted no transaction with output records: the test proved nothing" + diag()
        seqs = committed.seqs
        assert set(seqs) == set(expected), diag()
        for w, s in seqs.items():
            assert all(a < b for a, b in zip(s, s[1:])), \
                f"{w}: counts not strictly increasing (duplicated increments): {s}" + diag()
            assert max(s) <= expected[w], \
                f"{w}: counted {max(s)}, only {expected[w]} exist" + diag()
            assert s[-1] == expected[w], f"{w}: last count {s[-1]}, want {expected[w]}" + diag()
            # No record cache in the app: every increment is output, none twice, none lost.
            gaps = sorted(set(range(1, expected[w] + 1)) - set(s))
            assert s == list(range(1, expected[w] + 1)), \
                f"{w}: counts missing {gaps[:20]}" + diag()
    finally:
        feeder.stop_flag.set()
        for p in (first, second):
            if p is not None:
                p.kill()
        committed.close()
        uncommitted.close()
