"""A connection flood from one address against a running node, and a producer from another.

    python3 bench/flood.py HOST:PORT [FLOOD_CONNECTIONS] [RECORDS]

Opens FLOOD_CONNECTIONS idle TCP connections (default 19,500) from 127.0.0.2 that never send
a byte, holds them, and meanwhile produces RECORDS (default 5,000) with confluent-kafka
from 127.0.0.1 (acks=all, 30 s message timeout). Prints how many flood connections the node
kept open after 2 s and after 15 s, and how many records were delivered and how fast."""

import resource
import socket
import sys
import time
import uuid

from confluent_kafka import Producer


def open_count(socks):
    n = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                continue
        except BlockingIOError:
            pass
        except OSError:
            continue
        n += 1
    return n


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    flood_n = int(sys.argv[2]) if len(sys.argv) > 2 else 19_500
    records = int(sys.argv[3]) if len(sys.argv) > 3 else 5_000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, flood_n + 1024), hard))
    socks = []
    t0 = time.monotonic()
    for _ in range(flood_n):
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        try:
            s.connect((host, int(port)))
        except OSError:
            s.close()
            continue
        socks.append(s)
    print(f"flood: {len(socks)} connections made in {time.monotonic() - t0:.1f}s")
    time.sleep(2)
    print(f"flood: {open_count(socks)} still open after 2 s")
    delivered = [0]
    p = Producer({"bootstrap.servers": sys.argv[1], "acks": "all", "message.timeout.ms": 30000})
    topic = f"flood-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    for i in range(records):
        p.produce(topic, b"x" * 100, on_delivery=lambda e, m: delivered.__setitem__(0, delivered[0] + (e is None)))
        p.poll(0)
    p.flush(60)
    took = time.monotonic() - t0
    print(f"producer: {delivered[0]} of {records} delivered in {took:.1f}s during the flood")
    time.sleep(max(0.0, 15 - took))
    print(f"flood: {open_count(socks)} still open after 15 s")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
