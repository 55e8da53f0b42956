"""Transactions side by side: Strata and Apache Kafka on this machine, one run.

    python bench/txn.py [--strata-bin PATH] [--records N] [--rounds R] [--java-txns N] [--smoke]

For each broker (fresh data directory, one node): a transactional producer (confluent-kafka,
1 KB records, acks=all, 3 partitions) commits transactions of 100 records and of 10,000
records; records/s over the whole run and the latency of `commit_transaction` (p50, p99)
are reported. Then a consumer reads the topic back with read_committed and with
read_uncommitted (records/s). Brokers run one after the other, rounds alternate, and ratios
Strata/Kafka are per round, so drift of the machine between rounds cancels out.

Then the Java 4.1 producer (tests/java's Cli on kafka-clients 4.1) commits transactions of 10
records one after the other, on Strata with transaction version 2 (its default: no
AddPartitionsToTxn round trip, an epoch bump per EndTxn), on Strata held to version 1
(`--transaction-version 0`), and on Kafka 3.9 (version 1): transactions/s.

Strata runs with its default flush policy (acks=all writes fsynced before the answer);
Kafka with its defaults (no fsync; the page cache). Kafka's transaction.state.log settings
are set to a single node's (replication factor 1, min ISR 1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("STRATA_CACHE", Path.home() / ".cache/strata-testbed"))
PARTITIONS = 3
VALUE = os.urandom(1024)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


class Strata:
    name = "strata"

    def __init__(self, binary: str, work: Path, args: tuple[str, ...] = (), name: str = "strata"):
        self.binary, self.work, self.args, self.name = binary, work, args, name

    def start(self) -> str:
        self.dir = Path(tempfile.mkdtemp(dir=self.work, prefix="strata-"))
        self.port = free_port()
        self.log = open(self.dir / "node.log", "wb")
        self.proc = subprocess.Popen(
            [self.binary, "--data-dir", str(self.dir / "data"), "--listen",
             f"127.0.0.1:{self.port}", *self.args],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port)
        return f"127.0.0.1:{self.port}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Kafka:
    name = "kafka"

    def __init__(self, work: Path):
        self.work = work

    def start(self) -> str:
        self.dir = Path(tempfile.mkdtemp(dir=self.work, prefix="kafka-"))
        self.port = free_port()
        env = dict(os.environ)
        env["KAFKA_EXTRA_PROPS"] = "\n".join([
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "offsets.topic.replication.factor=1",
            "group.initial.rebalance.delay.ms=0",
        ])
        subprocess.run(["bash", str(REPO / "tests/testbed/kafka.sh"), "start", str(self.dir),
                        str(self.port), str(free_port())], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        wait_port(self.port)
        return f"127.0.0.1:{self.port}"

    def stop(self):
        subprocess.run(["bash", str(REPO / "tests/testbed/kafka.sh"), "stop", str(self.dir)],
                       check=False, stdout=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


def create(bs: str, topic: str):
    a = AdminClient({"bootstrap.servers": bs})
    a.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)


def produce(bs: str, topic: str, per_txn: int, total: int) -> dict:
    p = Producer({"bootstrap.servers": bs, "transactional.id": f"bench-{uuid.uuid4().hex}",
                  "linger.ms": 5, "batch.size": 1 << 20, "queue.buffering.max.messages": 1 << 20,
                  "queue.buffering.max.kbytes": 1 << 21})
    p.init_transactions(60)
    commits = []
    t0 = time.monotonic()
    sent = 0
    while sent < total:
        p.begin_transaction()
        for i in range(per_txn):
            while True:
                try:
                    p.produce(topic, VALUE, partition=(sent + i) % PARTITIONS)
                    break
                except BufferError:
                    p.poll(0.01)
        sent += per_txn
        c0 = time.monotonic()
        p.commit_transaction(60)
        commits.append(time.monotonic() - c0)
    elapsed = time.monotonic() - t0
    commits.sort()
    return {
        "records_per_s": sent / elapsed,
        "commit_p50_ms": 1000 * commits[len(commits) // 2],
        "commit_p99_ms": 1000 * commits[min(len(commits) - 1, int(len(commits) * 0.99))],
        "transactions": len(commits),
    }


def consume(bs: str, topic: str, isolation: str, expect: int) -> float:
    c = Consumer({"bootstrap.servers": bs, "group.id": f"b-{uuid.uuid4().hex}",
                  "isolation.level": isolation, "enable.auto.commit": False,
                  "fetch.max.bytes": 50 << 20, "max.partition.fetch.bytes": 10 << 20})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    n = 0
    t0 = time.monotonic()
    deadline = t0 + 300
    while n < expect and time.monotonic() < deadline:
        for m in c.consume(10000, timeout=1):
            if m.error() is None:
                n += 1
    elapsed = time.monotonic() - t0
    c.close()
    if n < expect:
        raise RuntimeError(f"{isolation}: read {n} of {expect}")
    return n / elapsed


JAVA_CLI = REPO / "tests/java/target/strata-compat.jar"
CLIENT_4 = REPO / "tests/java-streams/target/libs"


def java_txns(broker, txns: int, per_txn: int = 10) -> float:
    """Transactions/s of the Java 4.1 producer committing `txns` transactions in a row."""
    bs = broker.start()
    try:
        topic = f"jtxn-{uuid.uuid4().hex[:6]}"
        create(bs, topic)
        r = subprocess.run(
            ["java", "-cp", f"{JAVA_CLI}:{CLIENT_4}/*", "io.strata.compat.Cli", "txn-produce",
             "--bootstrap", bs, "--topic", topic, "--transactional-id",
             f"bench-{uuid.uuid4().hex}", "--plan", ",".join([f"commit:{per_txn}"] * txns),
             "--quiet", "--timing"],
            capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"java txn-produce on {broker.name}: {r.stdout[-500:]}"
                               f"{r.stderr[-2000:]}")
        summary = json.loads(r.stdout.splitlines()[-1])
        return txns / (summary["elapsed_ms"] / 1000)
    finally:
        broker.stop()


def run_one(broker, records: int) -> dict:
    bs = broker.start()
    try:
        out = {}
        for per_txn in (100, 10_000):
            topic = f"txn-{per_txn}-{uuid.uuid4().hex[:6]}"
            create(bs, topic)
            total = max(per_txn, records // per_txn * per_txn)
            out[f"txn{per_txn}"] = produce(bs, topic, per_txn, total)
            if per_txn == 10_000:
                out["read_committed"] = consume(bs, topic, "read_committed", total)
                out["read_uncommitted"] = consume(bs, topic, "read_uncommitted", total)
        return out
    finally:
        broker.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--strata-bin", default=os.environ.get(
        "STRATA_BIN", str(CACHE / "cargo-target/release/strata-node")))
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--java-txns", type=int, default=1000,
                    help="transactions of the Java producer per broker and round")
    ap.add_argument("--smoke", action="store_true", help="a few seconds, one round")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    if args.smoke:
        args.records, args.rounds, args.java_txns = 20_000, 1, 50
    work = Path(os.environ.get("BENCH_WORK_DIR", tempfile.gettempdir()))
    brokers = [Strata(args.strata_bin, work), Kafka(work)]
    rounds = []
    for r in range(args.rounds):
        order = brokers if r % 2 == 0 else list(reversed(brokers))
        res = {b.name: run_one(b, args.records) for b in order}
        rounds.append(res)
        print(json.dumps({"round": r, **res}), file=sys.stderr)

    def fig(name, *path):
        vals = []
        for res in rounds:
            v = res[name]
            for k in path:
                v = v[k]
            vals.append(v)
        return statistics.median(vals)

    def ratio(*path, lower_better=False):
        rs = []
        for res in rounds:
            s, k = res["strata"], res["kafka"]
            for p in path:
                s, k = s[p], k[p]
            rs.append(k / s if lower_better else s / k)
        return statistics.median(rs)

    print(f"| figure ({args.records:,} records of 1 KB, {args.rounds} rounds, median) "
          "| Strata | Kafka | Strata/Kafka |")
    print("| --- | --- | --- | --- |")
    for per in (100, 10_000):
        key = f"txn{per}"
        print(f"| transactions of {per:,}: records/s | {fig('strata', key, 'records_per_s'):,.0f} "
              f"| {fig('kafka', key, 'records_per_s'):,.0f} "
              f"| {ratio(key, 'records_per_s'):.2f}× |")
        for q in ("p50", "p99"):
            f = f"commit_{q}_ms"
            print(f"| transactions of {per:,}: commit {q} ms | {fig('strata', key, f):.1f} "
                  f"| {fig('kafka', key, f):.1f} "
                  f"| {ratio(key, f, lower_better=True):.2f}× faster |")
    for iso in ("read_committed", "read_uncommitted"):
        print(f"| consume {iso}: records/s | {fig('strata', iso):,.0f} | {fig('kafka', iso):,.0f} "
              f"| {ratio(iso):.2f}× |")
    java = []
    if JAVA_CLI.is_file() and list(CLIENT_4.glob("kafka-clients-4.*.jar")):
        jbrokers = [Strata(args.strata_bin, work, name="strata-tv2"),
                    Strata(args.strata_bin, work, ("--transaction-version", "0"), "strata-tv1"),
                    Kafka(work)]
        for r in range(args.rounds):
            order = jbrokers if r % 2 == 0 else list(reversed(jbrokers))
            res = {b.name: java_txns(b, args.java_txns) for b in order}
            java.append(res)
            print(json.dumps({"java_round": r, **res}), file=sys.stderr)
        med = {k: statistics.median(res[k] for res in java) for k in java[0]}
        v2_v1 = statistics.median(res["strata-tv2"] / res["strata-tv1"] for res in java)
        v2_kafka = statistics.median(res["strata-tv2"] / res["kafka"] for res in java)
        print()
        print(f"| Java 4.1 producer, {args.java_txns:,} transactions of 10 records, median "
              "| Strata, transaction version 2 | Strata, version 1 | Kafka 3.9 (version 1) "
              "| v2/v1 | Strata v2/Kafka |")
        print("| --- | --- | --- | --- | --- | --- |")
        print(f"| transactions/s | {med['strata-tv2']:,.0f} | {med['strata-tv1']:,.0f} "
              f"| {med['kafka']:,.0f} | {v2_v1:.2f}× | {v2_kafka:.2f}× |")
    else:
        print("\n(Java 4.1 producer skipped: run tests/testbed/install.sh)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": rounds, "java": java}, indent=1))


if __name__ == "__main__":
    main()
