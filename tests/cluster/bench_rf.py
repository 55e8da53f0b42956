"""Produce throughput at RF 3 against RF 1 on the same cluster: acks=all, idempotent, 1 KiB
records, each for a fixed time. A benchmark script, not a test.

  python tests/cluster/bench_rf.py [--seconds 10] [--size 1024] [--partitions 3]
                                   [--bootstrap HOST:PORT,...] [--json FILE]

Without --bootstrap it starts a controller and three nodes the way the cluster suite does
(harness.py: network namespaces when root, else 127.0.0.1), from STRATA_NODE_BIN /
STRATA_OPERATOR_BIN or $CARGO_TARGET_DIR/debug. Compare the ratio, not the absolute figures,
with other runs (TESTBED.md: timings are noisy; debug builds are slow).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from confluent_kafka import Producer  # noqa: E402

from harness import Cluster, Topology, create_topic  # noqa: E402


def produce_for(bootstrap: str, topic: str, partitions: int, seconds: float, size: int) -> dict:
    """Produce as fast as the producer's queue allows for `seconds`, then wait for every
    acknowledgement; throughput counts acknowledged records over the whole time."""
    pr = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "batch.size": 1 << 20,
        "compression.type": "none",
        "queue.buffering.max.kbytes": 64 << 10,
        "message.timeout.ms": 60000,
    })
    acked = failed = 0

    def cb(err, _msg):
        nonlocal acked, failed
        if err is None:
            acked += 1
        else:
            failed += 1

    payload = os.urandom(size)
    # Warm up: metadata, producer id, connections.
    pr.produce(topic, payload, partition=0, on_delivery=lambda *_: None)
    pr.flush(30)
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < seconds:
        try:
            pr.produce(topic, payload, partition=i % partitions, on_delivery=cb)
            i += 1
        except BufferError:
            pr.poll(0.01)
        pr.poll(0)
    left = pr.flush(120)
    elapsed = time.monotonic() - t0
    return {
        "records": acked,
        "failed": failed + left,
        "seconds": round(elapsed, 2),
        "records_per_s": round(acked / elapsed, 1),
        "mb_per_s": round(acked * size / elapsed / 1e6, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--bootstrap", help="an existing cluster (default: start one)")
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--keep", action="store_true",
                    help="keep the cluster's directory (logs and GBs of data); by default it is "
                         "kept only when something failed")
    args = ap.parse_args()

    topo = cluster = None
    workdir = None
    ok = False
    try:
        if args.bootstrap:
            bootstrap = args.bootstrap
        else:
            topo = Topology(3).setup()
            workdir = Path(tempfile.mkdtemp(prefix="strata-bench-rf-"))
            cluster = Cluster(topo, workdir).start()
            bootstrap = cluster.bootstrap()
            print(f"cluster: {topo.describe()}; logs in {workdir}", file=sys.stderr)
        suffix = f"{int(time.time())}"
        results = {}
        for rf in (3, 1):
            topic = f"bench-rf{rf}-{suffix}"
            config = {"min.insync.replicas": "2" if rf == 3 else "1"}
            create_topic(bootstrap, topic, args.partitions, rf, config)
            if cluster:
                cluster.wait_partitions(
                    topic, lambda st: all(len(s.isr) == rf and s.leader > 0 for s in st.values()),
                    set(cluster.nodes), 60, f"{topic} fully in sync")
            results[f"rf{rf}"] = r = produce_for(bootstrap, topic, args.partitions, args.seconds,
                                                 args.size)
            print(f"RF={rf}: {r['records_per_s']:>10.1f} records/s  {r['mb_per_s']:>8.2f} MB/s  "
                  f"({r['records']} records in {r['seconds']} s, {r['failed']} failed)")
        ratio = results["rf3"]["records_per_s"] / max(results["rf1"]["records_per_s"], 1e-9)
        results["rf3_over_rf1"] = round(ratio, 3)
        print(f"RF=3 / RF=1 throughput: {ratio:.2f}")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        ok = all(results[k]["failed"] == 0 for k in ("rf3", "rf1"))
        return 0 if ok else 1
    finally:
        if cluster:
            cluster.stop()
        if topo:
            topo.teardown()
        if workdir:
            if ok and not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                print(f"cluster directory kept: {workdir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
