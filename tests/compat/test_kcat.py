"""kcat (librdkafka from Debian): produce, consume, metadata, offsets by time."""

import json
import shutil
import subprocess

import pytest

from helpers import create_topic

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed")


def kcat(broker, *args, input=None, timeout=60):
    r = subprocess.run(["kcat", "-b", broker.bootstrap, "-m", "30", *args], input=input,
                       capture_output=True, timeout=timeout)
    assert r.returncode == 0, f"kcat {' '.join(args)} failed ({r.returncode}):\n{r.stderr.decode()}"
    return r.stdout


def consume(broker, topic, fmt="%k\\t%s\\t%h\\t%p\\t%o\\n", *extra):
    out = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", fmt, *extra)
    return [line.split("\t") for line in out.decode().splitlines()]


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kcat_produce_consume_keys_headers(broker, topic, codec):
    lines = "".join(f"key{i}:value {i}\n" for i in range(20))
    kcat(broker, "-P", "-t", topic, "-K:", "-H", "h1=v1", "-H", "h2=two words", "-z", codec,
         input=lines.encode())
    rows = consume(broker, topic)
    assert rows == [[f"key{i}", f"value {i}", "h1=v1,h2=two words", "0", str(i)] for i in range(20)]


def test_kcat_partitioned(broker, topic):
    create_topic(broker.bootstrap, topic, 3)
    for part in range(3):
        kcat(broker, "-P", "-t", topic, "-p", str(part),
             input="".join(f"p{part}-{i}\n" for i in range(5)).encode())
    rows = consume(broker, topic, "%p\\t%o\\t%s\\n")
    assert sorted(rows) == sorted([str(p), str(i), f"p{p}-{i}"] for p in range(3) for i in range(5))
    # one partition only
    rows = consume(broker, topic, "%o\\t%s\\n", "-p", "2")
    assert rows == [[str(i), f"p2-{i}"] for i in range(5)]


def test_kcat_consume_offset_and_count(broker, topic):
    kcat(broker, "-P", "-t", topic, input="".join(f"m{i}\n" for i in range(10)).encode())
    out = kcat(broker, "-C", "-t", topic, "-p", "0", "-o", "4", "-c", "3", "-q", "-f", "%o:%s\\n")
    assert out.decode().splitlines() == ["4:m4", "5:m5", "6:m6"]
    out = kcat(broker, "-C", "-t", topic, "-p", "0", "-o", "-2", "-e", "-q", "-f", "%o:%s\\n")
    assert out.decode().splitlines() == ["8:m8", "9:m9"]


def test_kcat_metadata(broker, topic):
    create_topic(broker.bootstrap, topic, 4)
    md = json.loads(kcat(broker, "-L", "-J"))
    assert md["brokers"] == [{"id": 1, "name": broker.bootstrap}]
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic in topics
    parts = sorted(topics[topic]["partitions"], key=lambda p: p["partition"])
    assert [p["partition"] for p in parts] == [0, 1, 2, 3]
    assert all(p["leader"] == 1 and p["replicas"] == [{"id": 1}] and p["isrs"] == [{"id": 1}]
               for p in parts)
    # -t restricts to one topic
    md = json.loads(kcat(broker, "-L", "-J", "-t", topic))
    assert [t["topic"] for t in md["topics"]] == [topic]


def test_kcat_query_offset_by_time(broker, topic):
    base = 1_700_000_000_000
    # kcat -P cannot set timestamps; produce with explicit ones from kafka-python.
    from helpers import kp_producer
    p = kp_producer(broker.bootstrap)
    for i in range(5):
        p.send(topic, value=b"t%d" % i, timestamp_ms=base + i * 1000, partition=0)
    p.flush(timeout=30)
    p.close(timeout=10)
    out = kcat(broker, "-Q", "-t", f"{topic}:0:{base + 2500}").decode()
    assert f"{topic} [0] offset 3" in out, out
