#!/usr/bin/env python3
"""Before and after: two strata-node binaries measured in turn in one session, interleaved
(old, new, old, new, ...), with the same clients and workloads as bench/run.sh:

- W1 1 KB: bench/loadgen produces 1 KB records as fast as it goes for --w1-secs (8 partitions,
  acks=all, linger.ms=5, batch 1 MB);
- W3: loadgen writes a backlog of --w3-mib MiB of 1 KB records (round-robin over 8
  partitions), then reads it all from the start, --w3-passes times (totals over the passes);
- the produce profile of bench/profile.sh (and with --profile-consume the consume one): the
  shares of the broker's CPU samples spent in memcpy, kernel copies and CRCs.

Each workload gets a freshly started broker (--flush-policy never unless --policy says
otherwise) on an empty data directory. With --kafka, Apache Kafka runs W1 and W3 once at the
end for the Strata/Kafka ratio (the broker bench/run.sh runs, same settings).

  python3 bench/ab.py --old OLD_BIN --new NEW_BIN [--rounds 3] [--kafka] [--out DIR]
                      [--workloads w1,w3] [--no-profile] [--profile-consume]

Writes DIR/ab.json (every raw result) and DIR/ab.md (medians, new/old) and prints the
Markdown. Build the old binary from a worktree at the commit before the change:
`git worktree add /tmp/old REV && cargo build --release -p strata-node` there, then copy
target/release/strata-node aside.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "lib"))
from strata_testlib import CACHE  # noqa: E402

os.environ.setdefault(
    "BENCH_LOADGEN", os.path.join(CACHE, "loadgen-target", "release", "strata-bench-loadgen"))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (after BENCH_LOADGEN is set)

MiB = 1024 * 1024


def sampled(b, fn):
    s = bench.Sampler(lambda: b.pid).start()
    try:
        res = fn()
    finally:
        res_s = s.stop()
    res = dict(res)
    res["broker"] = res_s
    return res


def with_broker(b, fn):
    b.start()
    try:
        return fn(b)
    finally:
        b.stop()


def w1(b, secs):
    bench.create_topic(b, "w1", 8)
    return sampled(b, lambda: bench.run_loadgen(
        bench.producer_args(b, "w1", 1024, secs), timeout=secs + 180))


def w3(b, mib, passes):
    """Fill the backlog, then read it from the start `passes` times (one consumer after the
    other): the totals over the passes."""
    n = mib * 1024
    bench.create_topic(b, "w3", 8)
    fill = bench.run_loadgen(
        bench.producer_args(b, "w3", 1024, 3600, count=n, round_robin=True), timeout=1800)
    runs = []
    for _ in range(passes):
        faults = minor_faults(b.pid)
        runs.append(sampled(b, lambda: bench.run_loadgen(
            ["consume", "--brokers", b.bootstrap, "--topic", "w3", "--count", n, "--timeout", 900],
            timeout=960)))
        runs[-1]["broker"]["minor_faults"] = minor_faults(b.pid) - faults
    secs = sum(r["seconds"] for r in runs)
    moved = sum(r["bytes"] for r in runs)
    cpu = sum(r["broker"]["cpu_s"] for r in runs)
    wall = sum(r["broker"]["wall_s"] for r in runs)
    faults = sum(r["broker"]["minor_faults"] for r in runs)
    return {"mode": "consume", "records": sum(r["records"] for r in runs), "bytes": moved,
            "seconds": secs, "records_per_s": sum(r["records"] for r in runs) / secs,
            "mb_per_s": moved / MiB / secs,
            "broker": {"cpu_s": cpu, "wall_s": wall, "cpu_pct": 100.0 * cpu / wall,
                       "minor_faults_per_gib": faults / (moved / (1024 * MiB))},
            "passes": runs, "fill": fill}


def minor_faults(pid):
    """Page faults (minor: no disk read) the process took so far."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[7])


def profile(binary, out, secs, policy, workload, backlog_mib, passes):
    env = {**os.environ, "STRATA_BIN": binary, "OUT": out,
           "PROFILE_BACKLOG_MIB": str(backlog_mib), "PROFILE_PASSES": str(passes)}
    p = subprocess.run(["bash", os.path.join(HERE, "profile.sh"), str(secs), policy, workload],
                       env=env, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"profile.sh failed:\n{p.stdout[-1000:]}\n{p.stderr[-2000:]}")
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


def cpu_s_per_gib(res):
    """Broker CPU seconds per GiB of record values moved (the client sets the pace, so CPU
    per byte compares brokers better than CPU % alone)."""
    cpu = res["broker"].get("cpu_s")
    moved = res.get("bytes") if res.get("mode") == "consume" else \
        (res.get("acked") or 0) * (res.get("size") or 0)
    return cpu / (moved / (1024 * MiB)) if cpu is not None and moved else None


def metrics(run):
    m = {}
    if "w1" in run:
        r = run["w1"]
        m.update({"W1 1 KB: records/s": r["records_per_s"], "W1 1 KB: MB/s": r["mb_per_s"],
                  "W1 1 KB: broker CPU %": r["broker"]["cpu_pct"],
                  "W1 1 KB: broker CPU s per GiB": cpu_s_per_gib(r),
                  "W1 1 KB: broker peak RSS MiB": r["broker"].get("rss_peak_mib")})
    if "w3" in run:
        r = run["w3"]
        rss = [p["broker"].get("rss_peak_mib") for p in r.get("passes", [])]
        m.update({"W3 consume: records/s": r["records_per_s"], "W3 consume: MB/s": r["mb_per_s"],
                  "W3 consume: broker CPU %": r["broker"]["cpu_pct"],
                  "W3 consume: broker CPU s per GiB": cpu_s_per_gib(r),
                  "W3 consume: broker page faults per GiB": r["broker"].get("minor_faults_per_gib"),
                  "W3 consume: broker peak RSS MiB": max((x for x in rss if x), default=None)})
    for w in ("produce", "consume"):
        p = run.get(f"profile_{w}")
        if p:
            label = "W1 produce" if w == "produce" else "W3 consume"
            m.update({f"profile, {label}: records/s under perf": p["records_per_s"],
                      f"profile, {label}: memcpy % of broker CPU": p["user_memcpy_pct"],
                      f"profile, {label}: memset %": p.get("user_memset_pct"),
                      f"profile, {label}: kernel copies %": p["kernel_copy_pct"],
                      f"profile, {label}: CRC %": p["crc_pct"]})
    return m


def fmt(v):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def table(runs, kafka):
    keys = []
    for r in runs:
        for k in metrics(r):
            if k not in keys:
                keys.append(k)
    by = {"old": [metrics(r) for r in runs if r["label"] == "old"],
          "new": [metrics(r) for r in runs if r["label"] == "new"]}
    km = metrics(kafka) if kafka else {}
    head = "| Metric | old (median) | new (median) | new / old | old runs | new runs |"
    sep = "|---|---:|---:|---:|---|---|"
    if kafka:
        head += " Kafka | new / Kafka |"
        sep += "---:|---:|"
    lines = [head, sep]
    for k in keys:
        vals = {lab: [m[k] for m in ms if m.get(k) is not None] for lab, ms in by.items()}
        if not any(vals.values()):
            continue
        med = {lab: statistics.median(v) if v else None for lab, v in vals.items()}
        ratio = med["new"] / med["old"] if med["old"] and med["new"] is not None else None
        row = (f"| {k} | {fmt(med['old'])} | {fmt(med['new'])} | "
               f"{f'{ratio:.2f}×' if ratio is not None else '–'} | "
               f"{', '.join(fmt(v) for v in vals['old'])} | "
               f"{', '.join(fmt(v) for v in vals['new'])} |")
        if kafka:
            kv = km.get(k)
            kr = med["new"] / kv if kv and med["new"] is not None else None
            row += f" {fmt(kv)} | {f'{kr:.2f}×' if kr is not None else '–'} |"
        lines.append(row)
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="strata-node binary before the change")
    ap.add_argument("--new", required=True, help="strata-node binary after the change")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--policy", default="never", help="--flush-policy of both binaries")
    ap.add_argument("--workloads", default="w1,w3", help="comma-separated subset of w1,w3")
    ap.add_argument("--w1-secs", type=float, default=15.0)
    ap.add_argument("--w3-mib", type=int, default=2048)
    ap.add_argument("--w3-passes", type=int, default=3, help="reads of the W3 backlog")
    ap.add_argument("--profile-secs", type=int, default=15)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--profile-consume", action="store_true",
                    help="also profile W3 (--w3-mib backlog, read --w3-passes times)")
    ap.add_argument("--kafka", action="store_true", help="Apache Kafka once, for the ratio")
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "strata-ab"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="strata-ab-", dir=os.environ.get("BENCH_WORK_DIR"))
    bins = {"old": os.path.abspath(a.old), "new": os.path.abspath(a.new)}
    started = datetime.datetime.now(datetime.timezone.utc)
    runs, kafka = [], None
    load = os.getloadavg()
    for i in range(a.rounds):
        for label in ("old", "new"):
            run = {"label": label, "round": i + 1}
            bench.log(f"round {i + 1}: {label}")
            mk = lambda: bench.StrataBroker(os.path.join(work, label), a.policy, bins[label])
            os.makedirs(os.path.join(work, label), exist_ok=True)
            for key, fn in (("w1", lambda b: w1(b, a.w1_secs)),
                            ("w3", lambda b: w3(b, a.w3_mib, a.w3_passes))):
                if key not in a.workloads.split(","):
                    continue
                try:
                    run[key] = with_broker(mk(), fn)
                except Exception as e:  # noqa: BLE001 - recorded, the run goes on
                    run[key + "_failed"] = str(e)[:2000]
                    bench.log(f"  {key}: FAILED {str(e)[:300]}")
            workloads = [] if a.no_profile else ["produce"]
            if a.profile_consume:
                workloads.append("consume")
            for w in workloads:
                out = os.path.join(a.out, f"profile-{label}-r{i + 1}-{w}")
                try:
                    run[f"profile_{w}"] = profile(bins[label], out, a.profile_secs, a.policy, w,
                                                  a.w3_mib, a.w3_passes)
                except Exception as e:  # noqa: BLE001
                    run[f"profile_{w}_failed"] = str(e)[:2000]
                    bench.log(f"  profile {w}: FAILED {str(e)[:300]}")
            bench.log(f"  {json.dumps({k: round(v, 1) for k, v in metrics(run).items() if v is not None})}")
            runs.append(run)
    if a.kafka:
        bench.log("Apache Kafka")
        kafka = {"label": "kafka"}
        kb = bench.KafkaBroker(os.path.join(work, "kafka-work"))
        os.makedirs(kb.work, exist_ok=True)
        for key, fn in (("w1", lambda b: w1(b, a.w1_secs)),
                        ("w3", lambda b: w3(b, a.w3_mib, a.w3_passes))):
            if key not in a.workloads.split(","):
                continue
            try:
                kafka[key] = with_broker(kb, fn)
            except Exception as e:  # noqa: BLE001
                kafka[key + "_failed"] = str(e)[:2000]
                bench.log(f"  kafka {key}: FAILED {str(e)[:300]}")
        kafka["version"] = kb.version
    meta = {"started": started.isoformat(timespec="seconds"), "binaries": bins,
            "policy": a.policy, "rounds": a.rounds, "w1_secs": a.w1_secs, "w3_mib": a.w3_mib,
            "w3_passes": a.w3_passes, "workloads": a.workloads,
            "load_before": load, "load_after": os.getloadavg(), "argv": sys.argv}
    with open(os.path.join(a.out, "ab.json"), "w") as f:
        json.dump({"meta": meta, "runs": runs, "kafka": kafka}, f, indent=1)
    md = table(runs, kafka)
    with open(os.path.join(a.out, "ab.md"), "w") as f:
        f.write(md + "\n")
    print(md)
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
