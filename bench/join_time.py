"""Group join time of a single kafka-python consumer: KafkaConsumer() to its first assignment.

    python3 bench/join_time.py HOST:PORT [RUNS]

Each run uses a new group id, so it measures a first join (which waits
group.initial.rebalance.delay.ms on Kafka and on Strata alike)."""

import sys
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer


def main():
    bs = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    p = KafkaProducer(bootstrap_servers=bs)
    p.send("join-time", b"x")
    p.flush()
    p.close()
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        c = KafkaConsumer("join-time", group_id=f"jt-{uuid.uuid4().hex[:8]}", bootstrap_servers=bs)
        while not c.assignment():
            c.poll(timeout_ms=50)
        times.append(time.monotonic() - t0)
        c.close()
    print("join seconds:", " ".join(f"{t:.2f}" for t in times))


if __name__ == "__main__":
    main()
