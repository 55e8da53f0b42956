"""TLS and SASL_SSL against plaintext, Strata beside Apache Kafka with the same settings.

    python3 bench/security.py [--records N] [--connections N] [--out FILE]

Starts a release strata-node (--flush-policy never, Kafka's page-cache durability) and the
reference Apache Kafka (tests/testbed/kafka.sh), each with three listeners on loopback:
PLAINTEXT, SSL and SASL_SSL (SCRAM-SHA-512), one certificate made for the run. For every
broker and listener it measures, with Kafka's Java perf tools from the Maven jars:

  produce   ProducerPerformance, N records of 1 KiB, acks=all, linger.ms=5, batch 64 KiB:
            MB/s and p99 latency
  consume   ConsumerPerformance of those N records: MB/s
  connect   new connections per second: a fresh librdkafka client per connection that
            connects, authenticates and fetches Metadata (the handshake cost)

Prints a table and writes JSON (--out). Needs tests/testbed/install.sh and
`cargo build --release -p strata-node`."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "lib"))
sys.path.insert(0, str(HERE.parent / "tests" / "security"))
from strata_testlib import KAFKA_LIBS, free_port, port_open, wait_for  # noqa: E402

from pki import Pki  # noqa: E402

KAFKA_SH = HERE.parent / "tests" / "testbed" / "kafka.sh"
STRATA = Path(os.environ.get("STRATA_BIN") or Path(os.environ.get(
    "CARGO_TARGET_DIR", HERE.parent / "target")) / "release" / "strata-node")
LISTENERS = ("PLAINTEXT", "SSL", "SASL_SSL")
USER, PASSWORD = "bench", "bench-secret"


def java(cls, *args, timeout=900):
    return subprocess.run(["java", "-Xmx1g", "-cp", f"{KAFKA_LIBS}/*", cls, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def props_file(path: Path, pki: Pki, listener: str) -> Path:
    lines = [f"security.protocol={listener}"]
    if listener != "PLAINTEXT":
        lines += ["ssl.truststore.type=PEM", f"ssl.truststore.location={pki.ca_file}"]
    if listener == "SASL_SSL":
        lines += ["sasl.mechanism=SCRAM-SHA-512",
                  "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule "
                  f'required username="{USER}" password="{PASSWORD}";']
    path.write_text("\n".join(lines) + "\n")
    return path


def add_user(bootstrap: str):
    r = java("kafka.admin.ConfigCommand", "--bootstrap-server", bootstrap, "--alter",
             "--entity-type", "users", "--entity-name", USER, "--add-config",
             f"SCRAM-SHA-512=[password={PASSWORD}]")
    assert r.returncode == 0, r.stdout + r.stderr


class Strata:
    name = "strata"

    def __init__(self, work: Path, pki: Pki):
        self.ports = {l: free_port() for l in LISTENERS}
        listeners = ",".join(f"{l}://127.0.0.1:{p}" for l, p in self.ports.items())
        self.log = open(work / "strata.log", "wb")
        self.proc = subprocess.Popen(
            [STRATA, "--data-dir", work / "strata-data", "--listeners", listeners,
             "--flush-policy", "never", "--tls-cert-file", pki.server_cert,
             "--tls-key-file", pki.server_key, "--sasl-enabled-mechanisms", "SCRAM-SHA-512"],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"})
        wait_for(lambda: all(port_open(p) for p in self.ports.values()), 60, "strata listening")
        add_user(f"127.0.0.1:{self.ports['PLAINTEXT']}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


class Kafka:
    name = "kafka"

    def __init__(self, work: Path, pki: Pki):
        self.dir = work / "kafka"
        self.ports = {l: free_port() for l in LISTENERS}
        cport = free_port()
        keystore = work / "kafka-keystore.pem"
        keystore.write_text(pki.server_key.read_text() + pki.server_cert.read_text())
        p = self.ports
        extra = "\n".join([
            f"listeners=PLAINTEXT://127.0.0.1:{p['PLAINTEXT']},CONTROLLER://127.0.0.1:{cport},"
            f"SSL://127.0.0.1:{p['SSL']},SASL_SSL://127.0.0.1:{p['SASL_SSL']}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{p['PLAINTEXT']},"
            f"SSL://127.0.0.1:{p['SSL']},SASL_SSL://127.0.0.1:{p['SASL_SSL']}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL,"
            "SASL_SSL:SASL_SSL",
            "ssl.keystore.type=PEM", f"ssl.keystore.location={keystore}",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        ])
        env = {**os.environ, "KAFKA_EXTRA_PROPS": extra}
        subprocess.run(["bash", KAFKA_SH, "start", self.dir, str(p["PLAINTEXT"]), str(cport)],
                       check=True, env=env)
        wait_for(lambda: all(port_open(x) for x in p.values()), 90, "kafka listening")
        add_user(f"127.0.0.1:{p['PLAINTEXT']}")

    def stop(self):
        subprocess.run(["bash", KAFKA_SH, "stop", self.dir], check=False)


PP = re.compile(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg "
                r"latency, ([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th")


def produce(broker, listener, props, topic, records):
    r = java("org.apache.kafka.tools.ProducerPerformance", "--topic", topic, "--num-records",
             records, "--record-size", 1024, "--throughput", -1, "--producer.config", props,
             "--producer-props", f"bootstrap.servers=127.0.0.1:{broker.ports[listener]}",
             "acks=all", "linger.ms=5", "batch.size=65536")
    m = None
    for line in r.stdout.splitlines():
        m = PP.search(line) or m
    assert m, r.stdout[-2000:] + r.stderr[-2000:]
    return {"mb_per_s": float(m.group(3)), "p99_ms": int(m.group(8)), "p50_ms": int(m.group(6))}


def consume(broker, listener, props, topic, records):
    r = java("org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server",
             f"127.0.0.1:{broker.ports[listener]}", "--topic", topic, "--messages", records,
             "--consumer.config", props, "--timeout", 60000,
             "--group", f"bench-{listener}-{time.time_ns()}")
    lines = r.stdout.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("start.time") and i + 1 < len(lines):
            vals = dict(zip([k.strip() for k in line.split(",")],
                            [v.strip() for v in lines[i + 1].split(",")]))
            assert int(vals["data.consumed.in.nMsg"]) >= records, r.stdout
            return {"mb_per_s": float(vals["fetch.MB.sec"])}
    raise AssertionError(r.stdout[-2000:] + r.stderr[-2000:])


def connect_rate(broker, listener, pki, n):
    from confluent_kafka.admin import AdminClient
    conf = {"bootstrap.servers": f"127.0.0.1:{broker.ports[listener]}",
            "security.protocol": listener}
    if listener != "PLAINTEXT":
        conf["ssl.ca.location"] = str(pki.ca_file)
    if listener == "SASL_SSL":
        conf.update({"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": USER,
                     "sasl.password": PASSWORD})
    t0 = time.monotonic()
    for _ in range(n):
        a = AdminClient(conf)
        a.list_topics(timeout=20)
        del a
    return {"connections_per_s": n / (time.monotonic() - t0)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--brokers", default="strata,kafka")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="strata-secbench-"))
    pki = Pki(work / "pki")
    results = {}
    for kind in a.brokers.split(","):
        b = (Strata if kind == "strata" else Kafka)(work, pki)
        try:
            for listener in LISTENERS:
                props = props_file(work / f"{kind}-{listener}.properties", pki, listener)
                topic = f"sec-{listener.lower()}"
                r = {"produce": produce(b, listener, props, topic, a.records)}
                r["consume"] = consume(b, listener, props, topic, a.records)
                r["connect"] = connect_rate(b, listener, pki, a.connections)
                results.setdefault(kind, {})[listener] = r
                print(kind, listener, json.dumps(r), flush=True)
        finally:
            b.stop()
    print(f"\n{'broker':8} {'listener':10} {'produce MB/s':>12} {'p99 ms':>7} "
          f"{'consume MB/s':>12} {'conn/s':>7}")
    for kind, per in results.items():
        for listener, r in per.items():
            print(f"{kind:8} {listener:10} {r['produce']['mb_per_s']:12.1f} "
                  f"{r['produce']['p99_ms']:7d} {r['consume']['mb_per_s']:12.1f} "
                  f"{r['connect']['connections_per_s']:7.1f}")
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
