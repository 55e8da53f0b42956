#!/usr/bin/env python3
"""Admin requests against one broker holding many partitions: the CreateTopics answer time for
topics of PER_TOPIC partitions, then the time of a Metadata request for all topics once every
partition has a leader (librdkafka's AdminClient.list_topics, median of 10).

  python3 bench/admin_scale.py BOOTSTRAP TOPICS PER_TOPIC [create]

Without `create`, the topics md-0 .. md-(TOPICS-1) must exist already. Start the broker first
(strata-node, or tests/testbed/kafka.sh start DIR PORT for Apache Kafka); figures in
docs/benchmarks.md, "Many partitions on one node".
"""
import statistics
import sys
import time

from confluent_kafka.admin import AdminClient, NewTopic


def main():
    bootstrap, topics, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 60000})
    if len(sys.argv) > 4 and sys.argv[4] == "create":
        started = time.monotonic()
        answers = []
        for i in range(topics):
            t = time.monotonic()
            fs = admin.create_topics([NewTopic(f"md-{i}", per, 1)], operation_timeout=300,
                                     request_timeout=300)
            fs[f"md-{i}"].result(timeout=600)
            answers.append(time.monotonic() - t)
        print(f"created {topics} x {per} in {time.monotonic() - started:.1f} s; CreateTopics "
              f"answer median {statistics.median(answers) * 1000:.0f} ms, "
              f"first {answers[0] * 1000:.0f} ms")
    want = topics * per

    def ours(md):
        return [t for n, t in md.topics.items() if n.startswith("md-")]

    while True:
        md = admin.list_topics(timeout=120)
        if sum(len(t.partitions) for t in ours(md)
               if all(p.leader >= 0 for p in t.partitions.values())) >= want:
            break
        time.sleep(1)
    took = []
    for _ in range(10):
        t = time.monotonic()
        md = admin.list_topics(timeout=120)
        took.append(time.monotonic() - t)
        assert sum(len(t.partitions) for t in ours(md)) == want
    print(f"Metadata for all topics ({want} partitions): median "
          f"{statistics.median(took) * 1000:.0f} ms, max {max(took) * 1000:.0f} ms over 10")


if __name__ == "__main__":
    main()
