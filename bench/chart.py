"""PNG chart of W2's produce latency percentiles (loadgen, microsecond histograms).

usage: python chart.py RESULTS.json OUT.png   (needs matplotlib; run.sh provides a venv)
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PCTS = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")]


def main(src, out):
    data = json.load(open(src))
    meta, results = data["meta"], data["results"]
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=110)
    keys = [k for k in meta["brokers"]
            if isinstance(results.get(k, {}).get("w2_loadgen"), dict)
            and "latency_us" in results[k]["w2_loadgen"]]
    width = 0.8 / max(1, len(keys))
    for i, k in enumerate(keys):
        lat = results[k]["w2_loadgen"]["latency_us"]
        ys = [lat.get(p, 0) / 1000.0 for p, _ in PCTS]
        xs = [j + (i - (len(keys) - 1) / 2) * width for j in range(len(PCTS))]
        bars = ax.bar(xs, ys, width * 0.95, label=meta["brokers"][k]["name"])
        for b, y in zip(bars, ys):
            ax.annotate(f"{y:.1f}" if y < 100 else f"{y:.0f}", (b.get_x() + b.get_width() / 2, y),
                        ha="center", va="bottom", fontsize=7)
    failed = [meta["brokers"][k]["name"] for k in meta["brokers"] if k not in keys]
    ax.set_xticks(range(len(PCTS)))
    ax.set_xticklabels([n for _, n in PCTS])
    ax.set_yscale("log")
    ax.set_ylabel("produce latency, ms (log scale)")
    rate = meta.get("w2_rates", {}).get("loadgen")
    title = (f"W2: produce latency at {rate:,} records/s of 1 KB, acks=all, linger.ms=5 "
             f"(loadgen)" if rate else "W2 produce latency")
    if meta.get("mode") == "smoke":
        title += " [smoke run]"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    if failed:
        fig.text(0.01, 0.01, "no W2 result: " + ", ".join(failed), fontsize=7)
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
