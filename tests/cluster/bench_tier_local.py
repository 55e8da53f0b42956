"""Local disk per replica of a tiered topic: N nodes, one partition with replication factor
N, `segment.bytes` --segment-mb MiB (1), `local.retention.bytes` --local-mb MiB (2), over a
file:// bucket the nodes share. Produces --mb MB of 1 KiB records (acks=all) and reports
each replica's local log bytes: the largest while producing, and --after seconds after the
last acknowledgement. With --replace-follower, a follower then loses its copy (killed, its
partition directory deleted, started again: a replaced disk) and the bytes it copies from
the leader to rejoin the ISR are reported against the partition's size.
A benchmark script, not a test.

  python tests/cluster/bench_tier_local.py [--nodes 3] [--mb 60] [--after 40]
                                           [--segment-mb 1] [--local-mb 2]
                                           [--replace-follower]
                                           [--node-arg=--retention-check-interval-ms=1000]
                                           [--json FILE]

Binaries from STRATA_NODE_BIN / STRATA_OPERATOR_BIN (as the cluster suite); processes as
harness.py starts them (network namespaces when root, else 127.0.0.1).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from confluent_kafka import Producer  # noqa: E402

from harness import Cluster, Topology, create_topic  # noqa: E402

MIB = 1 << 20


def local_bytes(node, topic: str) -> int:
    total = 0
    for f in (node.data_dir / f"{topic}-0").glob("*.log"):
        try:
            total += f.stat().st_size
        except OSError:  # deleted while listed
            pass
    return total


def bucket_bytes(bucket: Path) -> int:
    return sum(f.stat().st_size for f in bucket.rglob("*.log") if f.is_file())


def produce(bootstrap: str, topic: str, total: int) -> int:
    pr = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                   "batch.size": 64 << 10, "compression.type": "none",
                   "message.timeout.ms": 120000})
    acked = 0

    def cb(err, _msg):
        nonlocal acked
        if err is None:
            acked += 1

    value = os.urandom(1024)
    for _ in range(total // len(value)):
        while True:
            try:
                pr.produce(topic, value, partition=0, on_delivery=cb)
                break
            except BufferError:
                pr.poll(0.05)
        pr.poll(0)
    assert pr.flush(180) == 0, "records not acknowledged"
    return acked


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--mb", type=int, default=60)
    ap.add_argument("--after", type=float, default=40)
    ap.add_argument("--segment-mb", type=int, default=1)
    ap.add_argument("--local-mb", type=int, default=2)
    ap.add_argument("--replace-follower", action="store_true")
    ap.add_argument("--node-arg", action="append", default=[],
                    help="FLAG=VALUE passed to every node")
    ap.add_argument("--json")
    args = ap.parse_args()
    topo = Topology(args.nodes).setup()
    workdir = Path(tempfile.mkdtemp(prefix="strata-bench-tier-"))
    bucket = workdir / "bucket"
    node_args = {"--object-store": f"file://{bucket}"}
    for a in args.node_arg:
        k, v = a.split("=", 1)
        node_args[k] = v
    c = Cluster(topo, workdir, n=args.nodes, offsets_rf=min(3, args.nodes), node_args=node_args)
    try:
        c.start()
        create_topic(c.bootstrap(), "t", 1, args.nodes, {
            "remote.storage.enable": "true", "segment.bytes": str(args.segment_mb * MIB),
            "local.retention.bytes": str(args.local_mb * MIB), "retention.bytes": "-1",
            "retention.ms": "-1", "min.insync.replicas": str(min(2, args.nodes))})
        c.wait_full_isr("t", timeout=60)
        worst = {i: 0 for i in c.nodes}
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                for i, n in c.nodes.items():
                    worst[i] = max(worst[i], local_bytes(n, "t"))
                time.sleep(0.25)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        t0 = time.monotonic()
        acked = produce(c.bootstrap(), "t", args.mb * 1_000_000)
        produced = time.monotonic() - t0
        # Seconds from the last acknowledgement until each replica is within local
        # retention + two segments (None: not within --after).
        t1 = time.monotonic()
        bound = (args.local_mb + 2 * args.segment_mb) * MIB
        trimmed = {i: None for i in c.nodes}
        while time.monotonic() - t1 < args.after:
            for i, n in c.nodes.items():
                if trimmed[i] is None and local_bytes(n, "t") <= bound:
                    trimmed[i] = round(time.monotonic() - t1, 1)
            time.sleep(0.25)
        stop.set()
        th.join()
        leader = c.metadata(1, ["t"]).topics["t"].partitions[0].leader
        # Bucket GETs per node, from the last "tiering stats" log line (every 10 s when
        # something moved; the whole node, so the manifest reads of the offsets topic too).
        gets = {}
        for i, n in c.nodes.items():
            found = re.findall(r"bucket_gets=(\d+)", n.log_text())
            gets[i] = int(found[-1]) if found else 0
        after = {i: local_bytes(n, "t") for i, n in c.nodes.items()}
        result = {
            "nodes": args.nodes, "mb": args.mb, "node_args": args.node_arg,
            "records": acked, "produce_seconds": round(produced, 1), "leader": leader,
            "max_while_producing": worst, f"after_{int(args.after)}s": after,
            "seconds_to_bound": trimmed,
            "bucket_log_bytes": bucket_bytes(bucket), "bucket_gets": gets,
        }
        for i in sorted(c.nodes):
            role = "leader" if i == leader else "follower"
            print(f"node {i} ({role}): max while producing {worst[i] / 1e6:7.1f} MB, "
                  f"{args.after:.0f} s after {after[i] / 1e6:7.1f} MB, within {bound / MIB:.0f} MiB after "
                  f"{trimmed[i]} s, {gets[i]} bucket GETs")
        print(f"bucket: {result['bucket_log_bytes'] / 1e6:.1f} MB; {acked} records in {produced:.1f} s")
        if args.replace_follower:
            f = next(i for i in sorted(c.nodes) if i != leader)
            node = c.nodes[f]
            node.kill()
            shutil.rmtree(node.data_dir / "t-0")
            size = bucket_bytes(bucket) + local_bytes(c.nodes[leader], "t")
            t2 = time.monotonic()
            node.start()
            c.wait_full_isr("t", timeout=300)
            took = time.monotonic() - t2
            copied = node.metric("strata_replica_fetched_bytes_total")
            result["replaced_follower"] = {"node": f, "partition_bytes": size,
                                           "copied_bytes": copied, "seconds_to_isr": round(took, 1),
                                           "local_bytes_after": local_bytes(node, "t")}
            print(f"replaced follower (node {f}, empty disk): copied {copied / 1e6:.1f} MB of a "
                  f"{size / 1e6:.1f} MB partition ({copied / size:.2%}), in the ISR {took:.1f} s "
                  f"after it started; local log now {local_bytes(node, 't') / 1e6:.1f} MB")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return 0
    finally:
        c.stop()
        topo.teardown()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
