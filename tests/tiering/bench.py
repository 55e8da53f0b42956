#!/usr/bin/env python3
"""Tiering figures (not a test, not asserted): upload throughput, catch-up reads from the
bucket with cold caches and again from the disk cache, against reads of a local topic,
bucket requests per GiB, the local disk of a tiered partition over time while producing
at full speed (a plot), and a whole-cluster restore of it all into an empty node.

  STRATA_NODE_BIN=target/release/strata-node \\
    ~/.cache/strata-testbed/testbed-venv/bin/python tests/tiering/bench.py [MiB [SEGMENT_MiB]]

  TIER_BENCH_PLOT=FILE.png   where the plot goes (default: the work dir)
  TIER_BENCH_LOCAL_MIB=N     local.retention.bytes in MiB (default: two segments)

MinIO, the node and the clients share this machine, so the figures are ratios for this
machine, not absolutes. The page cache is warm for local reads (the node's local files were
just written); for the cold read the node restarts with its disk cache emptied, for the disk
cache read it restarts with the disk cache the cold read filled (the memory cache is empty
after every restart).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import urllib.request
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from conftest import Minio, Node, S3Bucket, create_topic  # noqa: E402
from strata_testlib import free_port, wait_for  # noqa: E402

MIB = 1 << 20
SEGMENT = (int(sys.argv[2]) if len(sys.argv) > 2 else 16) * MIB
LOCAL = int(os.environ.get("TIER_BENCH_LOCAL_MIB", 0)) * MIB or 2 * SEGMENT
GETS = 'strata_tiering_bucket_requests_total{op="get"}'
BYTES_DOWN = 'strata_tiering_bucket_bytes_total{direction="down"}'
DISK_HITS = 'strata_tiering_disk_cache_requests_total{result="hit"}'
DISK_MISSES = 'strata_tiering_disk_cache_requests_total{result="miss"}'


def produce_bytes(bootstrap: str, topic: str, total: int) -> float:
    from confluent_kafka import Producer

    pr = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 20,
                   "batch.size": 1 << 20, "compression.type": "none"})
    value = bytes(range(256)) * 4
    t0 = time.time()
    for i in range(total // len(value)):
        while True:
            try:
                pr.produce(topic, value=value, key=str(i).encode(), partition=0)
                break
            except BufferError:
                pr.poll(0.05)
    assert pr.flush(300) == 0
    return time.time() - t0


def produce_latencies(bootstrap: str, topic: str, seconds: float, rate: int = 500) -> list[float]:
    """Send-to-ack latency of acks=all records at `rate` per second for `seconds`."""
    from confluent_kafka import Producer

    pr = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    lat: list[float] = []
    value = b"x" * 1024
    t0 = time.time()
    i = 0
    while time.time() - t0 < seconds:
        sent = time.time()
        pr.produce(topic, value=value, on_delivery=lambda err, m, s=sent: err or lat.append(time.time() - s))
        pr.poll(0)
        i += 1
        pause = t0 + i / rate - time.time()
        if pause > 0:
            time.sleep(pause)
    pr.flush(60)
    return lat


def consume_bytes(bootstrap: str, topic: str) -> tuple[int, float]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}-{time.time()}",
                  "enable.auto.commit": False, "fetch.max.bytes": 52428800,
                  "max.partition.fetch.bytes": 4 * MIB, "queued.max.messages.kbytes": 262144})
    _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
    c.assign([TopicPartition(topic, 0, 0)])
    n = 0
    size = 0
    t0 = time.time()
    while n < high:
        for m in c.consume(10000, timeout=1):
            assert m.error() is None, m.error()
            n += 1
            size += len(m.value()) + len(m.key())
    dt = time.time() - t0
    c.close()
    return size, dt


def metrics(addr: str) -> dict[str, float]:
    """GET /metrics: {sample name with labels: value}."""
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def local_disk_over_time(node: Node, addr: str, topic: str, total: int, plot: Path) -> dict:
    """Produce `total` bytes at full speed into a topic tiered from the start, sampling its
    local log bytes and the bucket's bytes every 0.25 s, and 10 s after; plot them."""
    samples: list[tuple[float, int, float]] = []
    stop = threading.Event()
    t0 = time.time()

    def sample():
        while not stop.is_set():
            remote = metrics(addr).get(
                f'strata_tiering_remote_bytes{{topic="{topic}",partition="0"}}', 0.0)
            local = 0
            for f in node.partition_dir(topic, 0).glob("*.log"):
                try:
                    local += f.stat().st_size
                except OSError:  # deleted while listed
                    pass
            samples.append((time.time() - t0, local, remote))
            time.sleep(0.25)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    dt = produce_bytes(node.bootstrap, topic, total)
    time.sleep(10)
    stop.set()
    th.join()
    peak = max(s[1] for s in samples)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot([s[0] for s in samples], [s[1] / MIB for s in samples], label="local log (MiB)")
        ax.plot([s[0] for s in samples], [s[2] / MIB for s in samples], label="in the bucket (MiB)")
        ax.axhline(LOCAL / MIB, linestyle=":", color="gray", label="local.retention.bytes")
        ax.axvline(dt, linestyle="--", color="gray", label="producer done")
        ax.set_xlabel("seconds")
        ax.set_ylabel("MiB")
        ax.set_title(f"One tiered partition, {total // MIB} MiB produced at full speed, "
                     f"{SEGMENT // MIB} MiB segments")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot)
    except ImportError:
        print("no matplotlib: no plot")
    return {"produce_s": dt, "peak_local_bytes": peak, "samples": samples}


def main():
    total = int(sys.argv[1]) * MIB if len(sys.argv) > 1 else 256 * MIB
    work = Path(tempfile.mkdtemp(prefix="strata-tier-bench-"))
    minio = Minio(work / "minio")
    try:
        bucket = S3Bucket(minio, "bench")
        maddr = f"127.0.0.1:{free_port()}"
        node = Node(work / "node", bucket, extra_args=["--metrics-listen", maddr])
        node.start()
        plot = Path(os.environ.get("TIER_BENCH_PLOT") or work / "tier-local-disk.png")
        common = {"segment.bytes": str(SEGMENT), "retention.ms": "-1", "retention.bytes": "-1"}
        create_topic(node.bootstrap, "tiered", 1, {**common, "local.retention.bytes": str(LOCAL)})
        create_topic(node.bootstrap, "local", 1, common)
        dt = produce_bytes(node.bootstrap, "tiered", total)
        print(f"produce {total / MIB:.0f} MiB: {total / MIB / dt:.1f} MiB/s")
        produce_bytes(node.bootstrap, "local", total)
        written = node.local_log_bytes("tiered", 0)

        # Upload throughput: turn tiering on for a topic full of closed segments.
        from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

        admin = AdminClient({"bootstrap.servers": node.bootstrap})
        res = ConfigResource("topic", "tiered", incremental_configs=[
            ConfigEntry("remote.storage.enable", "true", incremental_operation=AlterConfigOpType.SET)])
        t0 = time.time()
        admin.incremental_alter_configs([res])[res].result(30)
        wait_for(lambda: node.local_log_bytes("tiered", 0) <= LOCAL + SEGMENT, 600, "tiering")
        up = time.time() - t0
        tiered = written - node.local_log_bytes("tiered", 0)
        m = metrics(maddr)
        req = lambda op: m.get(f'strata_tiering_bucket_requests_total{{op="{op}"}}', 0)  # noqa: E731
        gib = m.get('strata_tiering_bucket_bytes_total{direction="up"}', 0) / (1 << 30)
        total_req = sum(req(op) for op in ("put", "get", "list", "delete", "copy"))
        print(f"upload: {tiered / MIB:.0f} MiB tiered in {up:.1f} s = {tiered / MIB / up:.1f} MiB/s "
              f"(includes the 0.2 s uploader tick and 0.3 s retention tick); "
              f"{req('put'):.0f} PUTs (multipart parts, starts and completions included), "
              f"{req('get'):.0f} GETs, {req('list'):.0f} LISTs for {gib:.3f} GiB = "
              f"{req('put') / gib:.0f} PUTs/GiB, {total_req / gib:.0f} requests/GiB")

        # Catch-up reads from offset 0 after a restart: memory and disk caches empty.
        node.stop()
        shutil.rmtree(node.data / "remote-cache", ignore_errors=True)
        node.start()
        size, dt = consume_bytes(node.bootstrap, "tiered")
        m = metrics(maddr)
        gets = m.get(GETS, 0)
        remote_gib = m.get("strata_tiering_remote_read_bytes_total", 0) / (1 << 30)
        print(f"catch-up read, tiered topic (cold caches): {size / MIB:.0f} MiB in {dt:.1f} s = "
              f"{size / MIB / dt:.1f} MiB/s; {gets:.0f} GETs for "
              f"{m.get(BYTES_DOWN, 0) / MIB:.0f} MiB "
              f"from the bucket ({gets / max(remote_gib, 1e-9):.0f} GETs/GiB served)")
        # Again after a restart: the memory cache is empty, the disk cache holds what the
        # cold read fetched (up to its 1 GiB default).
        node.stop()
        node.start()
        size, dt = consume_bytes(node.bootstrap, "tiered")
        m = metrics(maddr)
        print(f"catch-up read, tiered topic (disk cache): {size / MIB:.0f} MiB in {dt:.1f} s = "
              f"{size / MIB / dt:.1f} MiB/s; {m.get(GETS, 0):.0f} GETs, "
              f"{m.get(DISK_HITS, 0):.0f} disk cache hits, {m.get(DISK_MISSES, 0):.0f} misses")
        size, dt = consume_bytes(node.bootstrap, "local")
        print(f"catch-up read, local topic: {size / MIB:.0f} MiB in {dt:.1f} s = {size / MIB / dt:.1f} MiB/s")

        # The local disk of a partition tiered from the start, while producing at full speed.
        create_topic(node.bootstrap, "live", 1, {**common, "remote.storage.enable": "true",
                                                  "local.retention.bytes": str(LOCAL)})
        live = local_disk_over_time(node, maddr, "live", total, plot)
        print(f"local disk while producing {total / MIB:.0f} MiB at full speed into a tiered "
              f"topic ({total / MIB / live['produce_s']:.1f} MiB/s): peak "
              f"{live['peak_local_bytes'] / MIB:.1f} MiB for local.retention.bytes "
              f"{LOCAL / MIB:.0f} MiB + one {SEGMENT / MIB:.0f} MiB segment; "
              f"{live['samples'][-1][1] / MIB:.1f} MiB 10 s after; plot: {plot}")
        (work / "live.json").write_text(json.dumps(live))

        # Produce latency (acks=all, 1 KiB records at a steady rate) alone, then while a
        # consumer catches up from the bucket with a cold cache.
        create_topic(node.bootstrap, "latency", 1, {})
        alone = produce_latencies(node.bootstrap, "latency", 6.0)
        node.stop()
        shutil.rmtree(node.data / "remote-cache", ignore_errors=True)
        node.start()
        reader = threading.Thread(target=consume_bytes, args=(node.bootstrap, "tiered"))
        reader.start()
        busy = produce_latencies(node.bootstrap, "latency", 6.0)
        reader.join()
        for name, lat in (("alone", alone), ("during catch-up", busy)):
            lat.sort()
            p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
            print(f"produce latency {name}: n={len(lat)} p50={p(0.5):.1f} ms p99={p(0.99):.1f} ms max={lat[-1] * 1000:.1f} ms")
        node.kill()

        # Whole-cluster restore: the node and its disk are lost; a new node with an empty
        # disk and its own prefix restores every topic from the old prefix.
        restored = S3Bucket(minio, "bench-restored")
        naddr = f"127.0.0.1:{free_port()}"
        fresh = Node(work / "restored", restored,
                     extra_args=["--metrics-listen", naddr, "--restore-from", bucket.url])
        t0 = time.time()
        fresh.start()
        wait_for(lambda: "restore finished" in fresh.log_path.read_text(), 600, "the restore")
        took = time.time() - t0
        line = next(l for l in fresh.log_path.read_text().splitlines() if "restore finished" in l)
        f = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", line))}
        size, dt = consume_bytes(fresh.bootstrap, "tiered")
        print(f"restore into an empty node: {f['restored']} topics in {took:.1f} s from the new "
              f"node's start ({f['elapsed_ms'] / 1000:.1f} s restoring); {f['objects_copied']} objects, "
              f"{f['bytes_copied'] / MIB:.0f} MiB copied on the server, {f['bytes_read'] / 1024:.0f} KiB read "
              f"by the node; then {size / MIB:.0f} MiB of the tiered topic read from offset 0 in "
              f"{dt:.1f} s = {size / MIB / dt:.1f} MiB/s")
        fresh.stop()
    finally:
        minio.stop()
    print(f"work dir: {work}")


if __name__ == "__main__":
    main()
