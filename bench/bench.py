#!/usr/bin/env python3
"""Strata side by side with Apache Kafka and Tansu: the driver behind bench/run.sh.

Runs each broker in turn on loopback (Apache Kafka first: W2's rate comes from its W1 result),
runs every workload against it with the same clients, samples the broker's RSS and CPU from
/proc, and writes a Markdown report (tables with Strata/Kafka ratios), a JSON file with every
raw result and a PNG chart of W2's latency percentiles (bench/chart.py).

Standard library only; run.sh builds and installs everything first. See bench/README.md.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
import strata_testlib  # noqa: E402
from strata_testlib import free_port  # noqa: E402

CACHE = str(strata_testlib.CACHE)
KAFKA_LIBS = str(strata_testlib.KAFKA_LIBS)
KAFKA_SH = os.path.join(REPO, "tests", "testbed", "kafka.sh")
LOADGEN = os.environ.get(
    "BENCH_LOADGEN", os.path.join(HERE, "loadgen", "target", "release", "strata-bench-loadgen"))
STRATA = os.environ.get(
    "STRATA_BIN",
    os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release",
                 "strata-node"))
TANSU = os.environ.get("TANSU_BIN", os.path.join(CACHE, "tansu", "bin", "tansu"))
MiB = 1024 * 1024
GiB = 1024 * MiB

# Apache Kafka: kafka.sh writes a test-friendly server.properties; these lines (appended, so they
# win) put back Kafka's own defaults for everything but the loopback listeners and the
# replication factor 1 of the internal topics.  Heap as kafka-server-start.sh sets it.
KAFKA_DEFAULTS_BACK = "\n".join([
    "num.network.threads=3",
    "num.io.threads=8",
    "num.partitions=1",
    "offsets.topic.num.partitions=50",
    "transaction.state.log.num.partitions=50",
    "transaction.state.log.min.isr=1",
    "group.initial.rebalance.delay.ms=3000",
])
KAFKA_HEAP = "-Xmx1G -Xms1G"

PROFILES = {
    # every workload for a few seconds
    # every workload for a few seconds (W4 with 1, 10 and 100 partitions: creating and warming
    # up 1000 partitions alone takes Kafka most of a minute here)
    "smoke": dict(w1_secs=2.0, w1_java_max_bytes=64 * MiB, w2_secs=2.0, w3_bytes=64 * MiB,
                  w4_secs=2.0, w4_rate=2000, w4_parts=[1, 10, 100], w5_secs=2.0, w5_rate=100,
                  w5_java_msgs=100, warmup=0.5, java_min_records=20000),
    "full": dict(w1_secs=15.0, w1_java_max_bytes=16 * GiB, w2_secs=30.0, w3_bytes=2 * GiB,
                 w4_secs=20.0, w4_rate=10000, w4_parts=[1, 100, 1000], w5_secs=30.0,
                 w5_rate=200, w5_java_msgs=3000, warmup=2.0, java_min_records=200000),
}

# producer settings of W1/W2/W4 (the W1 settings)
P_ACKS, P_LINGER, P_BATCH = "all", 5, 1048576


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# a served request: Metadata v1 with no topics, answered with at least one broker

def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def metadata_served(port, timeout=1.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            client = b"bench-probe"
            body = struct.pack(">hhih", 3, 1, 42, len(client)) + client + struct.pack(">i", 0)
            s.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _recv_exact(s, 4))
            resp = _recv_exact(s, size)
            corr, nbrokers = struct.unpack(">ii", resp[:8])
            return corr == 42 and nbrokers >= 1
    except (OSError, ConnectionError, struct.error):
        return False


def wait_served(port, t0, alive, timeout):
    """Seconds from t0 until the port answers Metadata; None if `alive()` turns false."""
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if metadata_served(port, timeout=0.5):
            return time.monotonic() - t0
        if not alive():
            return None
        time.sleep(0.005)
    return None


# ------------------------------------------------------------------------------------------
# /proc sampling

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_rss_cpu(pid):
    """(RSS in bytes, CPU seconds user+system) of pid, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024, cpu
    except (OSError, ValueError, IndexError):
        return None
    return None


class Sampler:
    """Samples a broker's RSS and CPU every `interval` s between start() and stop().

    `pidf` returns the broker's current pid (it changes when a broker is restarted between
    workloads); CPU is summed over every pid seen."""

    def __init__(self, pidf, interval=0.1):
        self.pidf = pidf if callable(pidf) else (lambda: pidf)
        self.interval = interval
        self.samples = []
        self.cpu = {}  # pid -> [first, last] CPU seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        pid = self.pidf()
        v = proc_rss_cpu(pid) if pid else None
        if v:
            self.samples.append(v[0])
            self.cpu.setdefault(pid, [v[1], v[1]])[1] = v[1]

    def start(self):
        self.t0 = time.monotonic()
        self._sample()
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self._sample()
        wall = time.monotonic() - self.t0
        cpu = sum(last - first for first, last in self.cpu.values()) if self.cpu else None
        s = self.samples
        return {
            "wall_s": wall,
            "cpu_s": cpu,
            "cpu_pct": (100.0 * cpu / wall) if cpu is not None and wall > 0 else None,
            "rss_peak_mib": max(s) / MiB if s else None,
            "rss_mean_mib": sum(s) / len(s) / MiB if s else None,
        }


class MemoryGuard:
    """Kills the broker under test (SIGKILL) if the machine runs low on memory: a broker that
    keeps everything in memory must not make the kernel's OOM killer pick another process."""

    def __init__(self, broker, min_avail=3 * GiB):
        self.broker, self.min_avail = broker, min_avail
        self.tripped = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.2):
            try:
                with open("/proc/meminfo") as f:
                    avail = next(int(l.split()[1]) * 1024 for l in f
                                 if l.startswith("MemAvailable:"))
            except (OSError, StopIteration, ValueError):
                continue
            pid = self.broker.pid
            if avail < self.min_avail and pid:
                self.tripped = (f"killed by the benchmark's memory guard: {avail / GiB:.1f} GiB "
                                f"available, broker RSS "
                                f"{(proc_rss_cpu(pid) or (0, 0))[0] / GiB:.1f} GiB")
                log(f"  {self.tripped}")
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------------------
# brokers

class Broker:
    key = name = label = durability = how = ""
    version = ""
    # restart (and so empty) the broker before each workload: for brokers that keep every
    # record in memory, which would otherwise outgrow the machine in a full run
    fresh_per_workload = False

    def __init__(self, work):
        self.work = work
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.start_info = {}

    @property
    def pid(self):
        raise NotImplementedError

    def alive(self):
        return self.pid is not None and proc_rss_cpu(self.pid) is not None

    def logs_tail(self):
        return ""


class StrataBroker(Broker):
    def __init__(self, work, policy, binary=None):
        super().__init__(work)
        self.binary = binary or STRATA
        self.policy = policy
        self.key = f"strata-{policy}"
        self.name = f"Strata ({policy})"
        self.label = f"Strata, --flush-policy {policy}"
        self.durability = {
            "never": "page cache: no fsync on the produce path (Kafka's default); survives a "
                     "process crash, not a power loss",
            "acks-all": "fsync (group commit) before acknowledging acks=all produces; survives "
                        "a power loss",
        }[policy]
        self.how = (f"`strata-node --listen 127.0.0.1:PORT --data-dir DIR --node-id 1 "
                    f"--flush-policy {policy}`, other flags default")
        self.dir = os.path.join(work, self.key)
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def start(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.logf = open(os.path.join(self.work, f"{self.key}.log"), "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [self.binary, "--listen", self.bootstrap, "--advertise", self.bootstrap,
             "--data-dir", self.dir, "--node-id", "1", "--flush-policy", self.policy],
            stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "RUST_LOG": os.environ.get("BENCH_RUST_LOG", "warn")})
        secs = wait_served(self.port, t0, lambda: self.proc.poll() is None, 60)
        if secs is None:
            raise RuntimeError(f"{self.name} did not serve Metadata:\n{self.logs_tail()}")
        self.start_info = {"start_s": secs, "start_what": "fresh data dir"}

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs_tail(self):
        try:
            with open(os.path.join(self.work, f"{self.key}.log"), "rb") as f:
                return f.read()[-3000:].decode(errors="replace")
        except OSError:
            return ""


class KafkaBroker(Broker):
    key = "kafka"

    def __init__(self, work):
        super().__init__(work)
        self.version = kafka_version()
        self.name = f"Kafka {self.version}"
        self.label = f"Apache Kafka {self.version}, one combined KRaft node"
        self.durability = ("page cache: Kafka's default (no flush.messages/flush.ms), no fsync "
                           "before acknowledging")
        self.how = ("`tests/testbed/kafka.sh start` (KRaft broker+controller on 127.0.0.1), "
                    "Kafka's defaults restored for threads, partitions and group delay "
                    "(`num.network.threads=3`, `num.io.threads=8`, "
                    "`group.initial.rebalance.delay.ms=3000`, ...); internal topics RF 1; "
                    f"heap `{KAFKA_HEAP}` as kafka-server-start.sh")
        self.dir = os.path.join(work, "kafka")
        self.cport = free_port()
        self.env = {**os.environ, "KAFKA_EXTRA_PROPS": KAFKA_DEFAULTS_BACK,
                    "KAFKA_HEAP_OPTS": KAFKA_HEAP, "KAFKA_START_TIMEOUT": "120"}

    @property
    def pid(self):
        try:
            with open(os.path.join(self.dir, "kafka.pid")) as f:
                pid = int(f.read().strip())
            return pid if proc_rss_cpu(pid) is not None else None
        except (OSError, ValueError):
            return None

    def _start_timed(self):
        t0 = time.monotonic()
        p = subprocess.Popen(["bash", KAFKA_SH, "start", self.dir, str(self.port), str(self.cport)],
                             env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        secs = wait_served(self.port, t0, lambda: p.poll() is None or self.pid is not None, 150)
        out = p.communicate(timeout=150)[0].decode(errors="replace")
        if secs is None or p.returncode != 0:
            raise RuntimeError(f"Kafka did not start:\n{out}\n{self.logs_tail()}")
        return secs

    def start(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        # first start formats the log dir (kafka-storage format) and starts; the second is a
        # plain start on the formatted, empty dir: comparable to Strata's fresh start.
        first = self._start_timed()
        self._stop()
        again = self._start_timed()
        self.start_info = {"start_s": again, "start_what": "formatted empty log dir",
                           "format_and_start_s": first}

    def _stop(self):
        subprocess.run(["bash", KAFKA_SH, "stop", self.dir], env=self.env, timeout=120,
                       stdout=subprocess.DEVNULL)

    def stop(self):
        self._stop()
        shutil.rmtree(os.path.join(self.dir, "data"), ignore_errors=True)  # keep its logs

    def logs_tail(self):
        out = ""
        for f in ("logs/stdout.log", "logs/server.log"):
            try:
                with open(os.path.join(self.dir, f), "rb") as fh:
                    out += fh.read()[-2000:].decode(errors="replace")
            except OSError:
                pass
        return out


class TansuBroker(Broker):
    key = "tansu"
    fresh_per_workload = True

    def __init__(self, work):
        super().__init__(work)
        self.version = tansu_version()
        self.name = "Tansu (memory)"
        self.label = f"Tansu {self.version}, memory storage engine"
        self.durability = "memory only (`memory://` storage engine): nothing survives a restart"
        self.how = ("`tansu broker --listener-url tcp://127.0.0.1:PORT --advertised-listener-url "
                    "tcp://127.0.0.1:PORT --storage-engine memory://tansu/` (crates.io `tansu`, "
                    "feature `dynostore`); restarted, so emptied, before each workload (W1 1 KB, "
                    "W1 100 B, W2, ...): it keeps every record in memory, and a full run's "
                    "records do not fit in this machine's memory")
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def start(self):
        self.logf = open(os.path.join(self.work, "tansu.log"), "ab")
        url = f"tcp://127.0.0.1:{self.port}"
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [TANSU, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=self.work,
            env={**os.environ, "RUST_LOG": "warn", "NO_COLOR": "1"})
        secs = wait_served(self.port, t0, lambda: self.proc.poll() is None, 60)
        if secs is None:
            raise RuntimeError(f"Tansu did not serve Metadata:\n{self.logs_tail()}")
        self.start_info = {"start_s": secs, "start_what": "empty memory store"}

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def logs_tail(self):
        try:
            with open(os.path.join(self.work, "tansu.log"), "rb") as f:
                return f.read()[-3000:].decode(errors="replace")
        except OSError:
            return ""


def kafka_version():
    for f in sorted(os.listdir(KAFKA_LIBS)) if os.path.isdir(KAFKA_LIBS) else []:
        m = re.match(r"kafka_2\.13-(.+)\.jar$", f)
        if m:
            return m.group(1)
    return "?"


def tansu_version():
    try:
        out = subprocess.run([TANSU, "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip().split()[-1]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


# ------------------------------------------------------------------------------------------
# clients

class ClientError(RuntimeError):
    pass


def run_loadgen(args, timeout):
    cmd = [LOADGEN] + [str(a) for a in args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ClientError(f"timed out after {timeout:.0f}s: {' '.join(cmd)}")
    line = (p.stdout.strip().splitlines() or ["{}"])[-1]
    try:
        res = json.loads(line)
    except json.JSONDecodeError:
        res = {"ok": False, "error": p.stdout[-500:] + p.stderr[-1000:]}
    if p.returncode != 0 or not res.get("ok"):
        err = res.get("error") or res.get("first_error") or res.get("consumer_first_error") \
            or f"exit {p.returncode}, sent {res.get('sent')} acked {res.get('acked')} " \
               f"received {res.get('received')}"
        raise ClientError(f"loadgen {args[0]}: {err}")
    return res


def create_topic(b, topic, partitions):
    """Create the topic, then write one record to each partition (acks=all) and wait for it,
    so that measurements start on partitions that are ready for writes on every broker."""
    return run_loadgen(["create-topic", "--brokers", b.bootstrap, "--topic", topic,
                        "--partitions", partitions, "--timeout", 90, "--warm"], timeout=200)


def producer_args(b, topic, size, secs, rate=0, warmup=0.0, linger=P_LINGER, count=0,
                  round_robin=False):
    a = ["produce", "--brokers", b.bootstrap, "--topic", topic, "--size", size,
         "--duration", secs, "--rate", rate, "--warmup", warmup, "--acks", P_ACKS,
         "--linger-ms", linger, "--batch-size", P_BATCH, "--count", count]
    if round_robin:
        a.append("--round-robin")
    return a


def java(cls, args, timeout, work):
    log4j = os.path.join(work, "tools-log4j.properties")
    if not os.path.exists(log4j):
        with open(log4j, "w") as f:
            # The group coordinator's steps at INFO: when a consumer never gets its
            # partitions, its log says where the join stopped.
            # NetworkClient at INFO: disconnections, including a request that timed out.
            f.write("log4j.rootLogger=WARN, stderr\n"
                    "log4j.logger.org.apache.kafka.clients.consumer.internals=INFO\n"
                    "log4j.logger.org.apache.kafka.clients.NetworkClient=INFO\n"
                    "log4j.appender.stderr=org.apache.log4j.ConsoleAppender\n"
                    "log4j.appender.stderr.Target=System.err\n"
                    "log4j.appender.stderr.layout=org.apache.log4j.PatternLayout\n"
                    "log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n\n")
    cmd = ["java", "-Xmx512M", "-XX:+UseG1GC", "-Djava.awt.headless=true",
           f"-Dlog4j.configuration=file:{log4j}", "-cp", os.path.join(KAFKA_LIBS, "*"),
           f"org.apache.kafka.tools.{cls}"] + [str(a) for a in args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ClientError(f"{cls} timed out after {timeout:.0f}s")
    errs = [ln for ln in p.stderr.splitlines()
            if "Exception" in ln or " ERROR " in ln]
    return p, errs


PP_RE = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th")


def producer_perf(b, topic, size, records, throughput, work, timeout):
    props = [f"bootstrap.servers={b.bootstrap}", f"acks={P_ACKS}", f"linger.ms={P_LINGER}",
             f"batch.size={P_BATCH}"]
    p, errs = java("ProducerPerformance",
                   ["--topic", topic, "--num-records", int(records), "--record-size", size,
                    "--throughput", throughput, "--producer-props"] + props, timeout, work)
    m = None
    for line in p.stdout.splitlines():
        m = PP_RE.search(line) or m
    if p.returncode != 0 or not m or errs:
        raise ClientError(f"ProducerPerformance exit {p.returncode}: "
                          f"{(errs or p.stderr.splitlines() or ['no summary line'])[:3]}")
    sent, rps, mbps, avg, mx, p50, p95, p99, p999 = m.groups()
    if int(sent) < int(records):
        raise ClientError(f"ProducerPerformance sent {sent} of {records}")
    return {"records": int(sent), "records_per_s": float(rps), "mb_per_s": float(mbps),
            "latency_ms": {"mean": float(avg), "max": float(mx), "p50": int(p50),
                           "p95": int(p95), "p99": int(p99), "p999": int(p999)},
            "target_rate": throughput}


def consumer_perf(b, topic, records, work, timeout):
    p, errs = java("ConsumerPerformance",
                   ["--bootstrap-server", b.bootstrap, "--topic", topic, "--messages", int(records),
                    "--timeout", 30000, "--group", f"bench-{b.key}-{int(time.time())}"],
                   timeout, work)
    lines = p.stdout.splitlines()
    vals = None
    for i, line in enumerate(lines):
        if line.startswith("start.time") and i + 1 < len(lines):
            keys = [k.strip() for k in line.split(",")]
            vals = dict(zip(keys, [v.strip() for v in lines[i + 1].split(",")]))
    if p.returncode != 0 or not vals or "Exiting before consuming" in p.stdout + p.stderr:
        saved = os.path.join(work, f"consumer-perf-{b.key}-{int(time.time())}.log")
        with open(saved, "w") as f:
            f.write(p.stdout + "\n---- stderr\n" + p.stderr)
        raise ClientError(f"ConsumerPerformance exit {p.returncode}: "
                          f"{(errs or p.stdout.splitlines())[-3:]}; client log: {saved}; "
                          f"last client lines: {p.stderr.splitlines()[-6:]}")
    n = int(vals["data.consumed.in.nMsg"])
    if n < records:
        raise ClientError(f"ConsumerPerformance read {n} of {records}")
    return {"records": n, "mb": float(vals["data.consumed.in.MB"]),
            "mb_per_s_total": float(vals["MB.sec"]),
            "rebalance_ms": float(vals["rebalance.time.ms"]),
            "fetch_ms": float(vals["fetch.time.ms"]),
            "mb_per_s": float(vals["fetch.MB.sec"]),
            "records_per_s": float(vals["fetch.nMsg.sec"])}


def end_to_end_latency(b, topic, msgs, size, work, timeout):
    p, errs = java("EndToEndLatency", [b.bootstrap, topic, msgs, "all", size], timeout, work)
    out = p.stdout
    avg = re.search(r"Avg latency: ([\d.]+) ms", out)
    pct = re.search(r"Percentiles: 50th = (\d+), 99th = (\d+), 99.9th = (\d+)", out)
    if p.returncode != 0 or not avg or not pct:
        raise ClientError(f"EndToEndLatency exit {p.returncode}: "
                          f"{(errs or p.stderr.splitlines() or ['no result'])[-3:]}")
    return {"messages": msgs, "latency_ms": {"mean": float(avg.group(1)),
                                             "p50": int(pct.group(1)), "p99": int(pct.group(2)),
                                             "p999": int(pct.group(3))}}


# ------------------------------------------------------------------------------------------
# workloads

class Runner:
    def __init__(self, prof, work, kafka_w1):
        self.prof, self.work = prof, work
        self.kafka_w1 = kafka_w1  # filled by Kafka's W1, read by W2 for every broker

    def step(self, out, key, fn):
        """Run one measurement, store its result or its failure under out[key]."""
        t = time.monotonic()
        try:
            out[key] = fn()
            log(f"  {key}: ok ({time.monotonic() - t:.1f}s) {short(out[key])}")
        except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the run
            msg = str(e) if isinstance(e, ClientError) else traceback.format_exc()
            out[key] = {"failed": msg[:2000]}
            log(f"  {key}: FAILED {msg[:500]}")

    def fresh(self, b, r):
        """Before a workload: restart brokers that keep everything in memory."""
        if not b.fresh_per_workload:
            return
        info = b.start_info
        try:
            b.stop()
            b.start()
            r.setdefault("restarts", 0)
            r["restarts"] += 1
        except Exception as e:  # noqa: BLE001
            log(f"  restart failed: {e}")
        b.start_info = info

    def sampled(self, b, fn):
        s = Sampler(lambda: b.pid).start()
        try:
            res = fn()
        finally:
            res_s = s.stop()
        res = dict(res)
        res["broker"] = res_s
        return res

    def run_all(self, b):
        pr = self.prof
        r = {"start": b.start_info}
        idle = proc_rss_cpu(b.pid)
        r["start"]["idle_rss_mib"] = idle[0] / MiB if idle else None
        whole = Sampler(lambda: b.pid, interval=0.25).start()

        # W1: max produce throughput, 8 partitions, acks=all, linger 5 ms, batch 1 MB
        for size in (1024, 100):
            self.fresh(b, r)
            topic = f"w1-{size}"
            self.step(r, f"w1_topic_{size}", lambda: create_topic(b, topic, 8))
            self.step(r, f"w1_loadgen_{size}", lambda: self.sampled(b, lambda: run_loadgen(
                producer_args(b, topic, size, pr["w1_secs"]), timeout=pr["w1_secs"] + 180)))
            # ProducerPerformance takes a record count, not a duration: give it about half of
            # what loadgen did in w1_secs (the Java client is usually the slower one here)
            lg = r[f"w1_loadgen_{size}"].get("records_per_s") or 20000
            n = min(max(pr["java_min_records"], int(lg * pr["w1_secs"] / 2)),
                    pr["w1_java_max_bytes"] // size)
            self.step(r, f"w1_java_{size}", lambda: self.sampled(b, lambda: producer_perf(
                b, topic, size, n, -1, self.work, timeout=pr["w1_secs"] * 20 + 120)))
        if b.key == "kafka":
            for c in ("loadgen", "java"):
                self.kafka_w1[c] = r["w1_%s_1024" % c].get("records_per_s")

        # W2: produce latency at half of Kafka's W1 max (1 KB records, same producer settings)
        self.fresh(b, r)
        self.step(r, "w2_topic", lambda: create_topic(b, "w2", 8))
        rate_lg = round((self.kafka_w1.get("loadgen") or 20000) / 2)
        rate_j = round((self.kafka_w1.get("java") or 20000) / 2)
        self.step(r, "w2_loadgen", lambda: self.sampled(b, lambda: run_loadgen(
            producer_args(b, "w2", 1024, pr["w2_secs"], rate=rate_lg, warmup=pr["warmup"]),
            timeout=pr["w2_secs"] + 180)))
        self.step(r, "w2_java", lambda: self.sampled(b, lambda: producer_perf(
            b, "w2", 1024, int(rate_j * pr["w2_secs"]), rate_j, self.work,
            timeout=pr["w2_secs"] * 20 + 120)))

        # W3: consume throughput from a backlog
        n3 = pr["w3_bytes"] // 1024
        self.fresh(b, r)
        self.step(r, "w3_topic", lambda: create_topic(b, "w3", 8))
        # round-robin: an even backlog, so that no consumer spends its tail on one partition
        self.step(r, "w3_fill", lambda: run_loadgen(
            producer_args(b, "w3", 1024, 3600, count=n3, round_robin=True), timeout=1800))
        self.step(r, "w3_loadgen", lambda: self.sampled(b, lambda: run_loadgen(
            ["consume", "--brokers", b.bootstrap, "--topic", "w3", "--count", n3,
             "--timeout", 900], timeout=960)))
        self.step(r, "w3_java", lambda: self.sampled(b, lambda: consumer_perf(
            b, "w3", n3, self.work, timeout=960)))

        # W4: 1, 100, 1000 partitions at a fixed rate (records round-robin over partitions)
        self.fresh(b, r)
        for parts in pr["w4_parts"]:
            topic = f"w4-{parts}"
            self.step(r, f"w4_topic_{parts}", lambda: create_topic(b, topic, parts))
            self.step(r, f"w4_loadgen_{parts}", lambda: self.sampled(b, lambda: run_loadgen(
                producer_args(b, topic, 1024, pr["w4_secs"], rate=pr["w4_rate"],
                              warmup=pr["warmup"], round_robin=True),
                timeout=pr["w4_secs"] + 180)))

        # W5: end-to-end latency at low load, 1 partition, linger.ms=0
        self.fresh(b, r)
        self.step(r, "w5_topic", lambda: create_topic(b, "w5", 1))
        self.step(r, "w5_loadgen", lambda: run_loadgen(
            ["e2e", "--brokers", b.bootstrap, "--topic", "w5", "--size", 1024,
             "--duration", pr["w5_secs"], "--rate", pr["w5_rate"], "--warmup", pr["warmup"],
             "--acks", "all", "--linger-ms", 0], timeout=pr["w5_secs"] + 120))
        self.step(r, "w5_topic_java", lambda: create_topic(b, "w5j", 1))
        self.step(r, "w5_java", lambda: end_to_end_latency(
            b, "w5j", pr["w5_java_msgs"], 1024, self.work, timeout=pr["w5_java_msgs"] + 120))

        r["whole_run"] = whole.stop()
        return r


def short(res):
    if not isinstance(res, dict):
        return ""
    bits = []
    for k in ("records_per_s", "mb_per_s"):
        if isinstance(res.get(k), (int, float)):
            bits.append(f"{k}={res[k]:.1f}")
    for k in ("latency_us", "latency_ms"):
        if isinstance(res.get(k), dict) and "p99" in res[k]:
            bits.append(f"{k}.p50={res[k].get('p50')} p99={res[k]['p99']}")
    if isinstance(res.get("broker"), dict) and res["broker"].get("rss_peak_mib"):
        bits.append(f"rss={res['broker']['rss_peak_mib']:.0f}MiB "
                    f"cpu={res['broker']['cpu_pct'] or 0:.0f}%")
    return " ".join(bits)


# ------------------------------------------------------------------------------------------
# environment facts

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except subprocess.TimeoutExpired:
        return ""


def machine_facts(work):
    cpu = sh("lscpu | sed -n 's/^Model name: *//p'") or platform.processor()
    mem = sh("free -g | awk '/Mem:/ {print $2}'")
    return {
        "cpu": cpu, "cores": os.cpu_count(), "mem_gib": mem,
        "kernel": platform.release(),
        "fs": sh(f"df -hT {work} | awk 'NR==2 {{print $2\" on \"$1}}'"),
        "java": sh("java -version 2>&1 | head -1"),
        "rustc": sh("rustc --version"),
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "strata_rev": sh(f"git -C {REPO} rev-parse --short HEAD"),
        "strata_dirty": bool(sh(f"git -C {REPO} status --porcelain -- node Cargo.lock")),
        "librdkafka": (json.loads(sh(f"{LOADGEN} version") or "{}")).get("librdkafka", "?"),
    }


# ------------------------------------------------------------------------------------------
# main

def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mode", choices=sorted(PROFILES), default="full")
    ap.add_argument("--out", required=True, help="Markdown report to write")
    ap.add_argument("--chart", required=True, help="PNG chart of W2 latency to write")
    ap.add_argument("--json", help="raw results JSON (default: next to --out)")
    ap.add_argument("--brokers", default="kafka,strata-never,strata-acks-all,tansu",
                    help="comma-separated subset, in run order (kafka first: W2 needs it)")
    ap.add_argument("--chart-python", default=sys.executable,
                    help="python with matplotlib, for bench/chart.py")
    ap.add_argument("--tansu-unavailable", default="",
                    help="why Tansu cannot be run (it is then skipped and the reason reported)")
    args = ap.parse_args()
    prof = PROFILES[args.mode]
    json_path = args.json or os.path.splitext(args.out)[0] + ".json"

    work = tempfile.mkdtemp(prefix="strata-bench-", dir=os.environ.get("BENCH_WORK_DIR"))
    log(f"mode {args.mode}, work dir {work}")
    t_start = time.monotonic()
    meta = {"mode": args.mode, "profile": prof,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_facts(work), "brokers": {}, "skipped": {}}
    kafka_w1 = {}
    runner = Runner(prof, work, kafka_w1)
    results = {}
    failed_required = []
    for key in [k.strip() for k in args.brokers.split(",") if k.strip()]:
        if key == "tansu" and args.tansu_unavailable:
            meta["skipped"]["tansu"] = args.tansu_unavailable
            log(f"tansu skipped: {args.tansu_unavailable}")
            continue
        if key == "kafka":
            b = KafkaBroker(work)
        elif key.startswith("strata-"):
            b = StrataBroker(work, key[len("strata-"):])
        elif key == "tansu":
            b = TansuBroker(work)
        else:
            sys.exit(f"unknown broker {key}")
        meta["brokers"][key] = {"name": b.name, "label": b.label, "durability": b.durability,
                                "how": b.how}
        log(f"== {b.label}")
        subprocess.run(["sync"])
        try:
            b.start()
            log(f"  started in {b.start_info['start_s']:.2f}s (pid {b.pid})")
            with MemoryGuard(b) as guard:
                results[key] = runner.run_all(b)
            if guard.tripped:
                results[key]["failed"] = guard.tripped
        except Exception as e:  # noqa: BLE001
            log(f"  {key} failed: {e}")
            results.setdefault(key, {})["failed"] = str(e)[:2000]
        finally:
            alive = b.alive()
            results.setdefault(key, {})["alive_at_end"] = alive
            if not alive:
                results[key]["log_tail"] = b.logs_tail()
            t = time.monotonic()
            b.stop()
            results[key]["stop_s"] = time.monotonic() - t
            log(f"  stopped in {results[key]['stop_s']:.1f}s")
        bad = [k for k, v in results[key].items() if isinstance(v, dict) and "failed" in v]
        if "failed" in results[key]:
            bad.append("start")
        if bad and key != "tansu":
            failed_required.append(f"{key}: {', '.join(bad)}")
    meta["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    meta["elapsed_s"] = time.monotonic() - t_start
    meta["w2_rates"] = {c: round((kafka_w1.get(c) or 20000) / 2) for c in ("loadgen", "java")}

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    chart_ok = subprocess.run([args.chart_python, os.path.join(HERE, "chart.py"), json_path,
                               args.chart]).returncode == 0
    if not chart_ok:
        failed_required.append("chart")
    sys.path.insert(0, HERE)
    import report  # noqa: E402
    with open(args.out, "w") as f:
        f.write(report.render(meta, results, os.path.relpath(args.chart,
                                                             os.path.dirname(args.out)),
                              os.path.basename(json_path)))
    if failed_required:
        log(f"keeping {work} (broker logs)")
    else:
        shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {args.out}, {args.chart}, {json_path} in {meta['elapsed_s']:.0f}s")
    if failed_required:
        log("FAILED: " + "; ".join(failed_required))
        sys.exit(1)


if __name__ == "__main__":
    main()
