"""Load under failover: an idempotent acks=all producer in a background thread that records
exactly which records were acknowledged, and the check that reads a partition back.

Every record's value is `<tag>|<partition>|<n>` with n counting up per partition, so values
are distinct, their order is known, and anything else found in a partition is foreign.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def producer_config(bootstrap: str, **extra) -> dict:
    conf = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        # A delivery that fails is a test failure; give failover ample time first.
        "message.timeout.ms": 60000,
        # A stopped or cut-off leader never answers: give up on a request (and retry it, with
        # the same sequence numbers) after 5 s rather than librdkafka's 30 s.
        "request.timeout.ms": 5000,
        "socket.timeout.ms": 10000,
        "socket.connection.setup.timeout.ms": 5000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 1000,
        "retry.backoff.ms": 100,
        "retry.backoff.max.ms": 1000,
        "topic.metadata.refresh.interval.ms": 5000,
    }
    conf.update(extra)
    return conf


@dataclass
class Ack:
    t_ack: float       # monotonic time the delivery report was seen
    t_sent: float      # monotonic time produce() was called
    partition: int
    n: int
    offset: int


@dataclass
class Load:
    """Produces to `partitions` round robin from a thread until stop()."""

    bootstrap: str
    topic: str
    partitions: list[int]
    max_in_flight: int = 1000  # per partition: a stuck partition does not stop the others
    pace: float = 0.002        # seconds between produce() calls
    tag: str = field(default_factory=lambda: f"L{random.randrange(1 << 30):x}")
    producer_extra: dict = field(default_factory=dict)  # more producer settings

    def __post_init__(self):
        self.sent: dict[int, int] = {p: 0 for p in self.partitions}      # records produced
        self.acked: dict[int, dict[bytes, int]] = {p: {} for p in self.partitions}  # value -> offset
        self.acks: list[Ack] = []
        self.errors: list[tuple[int, bytes, str]] = []
        self.client_errors: list[str] = []
        self.fatal: list[str] = []
        self.unflushed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"load-{self.topic}", daemon=True)
        self._crash: BaseException | None = None
        self.flush_timeout = 90.0

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.stop()
        else:  # the test already failed: do not let a long flush or a second error hide why
            self.flush_timeout = 5.0
            try:
                self.stop(timeout=30)
            except BaseException:
                pass
        return False

    def value(self, p: int, n: int) -> bytes:
        return f"{self.tag}|{p}|{n:09d}".encode()

    def n_of(self, value: bytes) -> int | None:
        parts = value.split(b"|")
        if len(parts) != 3 or parts[0] != self.tag.encode():
            return None
        return int(parts[2])

    # -- the thread

    def start(self):
        self._thread.start()
        return self

    def _on_error(self, err):
        with self._lock:
            self.client_errors.append(str(err))
            if err.fatal():
                self.fatal.append(str(err))

    def _run(self):
        try:
            self._produce_loop()
        except BaseException as e:  # reported by stop()
            self._crash = e

    def _produce_loop(self):
        pr = Producer(producer_config(self.bootstrap, error_cb=self._on_error,
                                      **self.producer_extra))
        in_flight = {p: 0 for p in self.partitions}

        def delivered(err, msg, t_sent):
            p = msg.partition()
            n = self.n_of(msg.value())
            with self._lock:
                in_flight[p] -= 1
                if err is not None:
                    self.errors.append((p, msg.value(), str(err)))
                else:
                    self.acked[p][msg.value()] = msg.offset()
                    self.acks.append(Ack(time.monotonic(), t_sent, p, n, msg.offset()))

        i = 0
        while not self._stop.is_set():
            p = self.partitions[i % len(self.partitions)]
            i += 1
            if in_flight[p] >= self.max_in_flight:
                pr.poll(self.pace)
                continue
            n = self.sent[p]
            t = time.monotonic()
            try:
                pr.produce(self.topic, value=self.value(p, n), partition=p,
                           on_delivery=lambda err, msg, t=t: delivered(err, msg, t))
            except BufferError:
                pr.poll(0.05)
                continue
            with self._lock:
                in_flight[p] += 1
                self.sent[p] = n + 1
            pr.poll(0)
            time.sleep(self.pace)
        self.unflushed = pr.flush(self.flush_timeout)

    def stop(self, timeout: float = 100):
        """Stop producing and wait for every outstanding record's delivery report."""
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "load thread did not finish flushing"
        if self._crash:
            raise self._crash

    # -- observations (thread-safe)

    def n_acked(self, p: int | None = None) -> int:
        with self._lock:
            if p is None:
                return sum(len(a) for a in self.acked.values())
            return len(self.acked[p])

    def first_ack_sent_after(self, p: int, t: float) -> Ack | None:
        """The first acknowledgement of a record to p that was produced after monotonic t."""
        with self._lock:
            return next((a for a in self.acks if a.partition == p and a.t_sent > t), None)

    def acks_after(self, t: float, p: int | None = None) -> int:
        with self._lock:
            return sum(1 for a in self.acks if a.t_sent > t and (p is None or a.partition == p))

    def wait_acks_after(self, t: float, count: int, timeout: float, p: int | None = None,
                        what: str = ""):
        """Until `count` records produced after t (to p, or to any partition) are acknowledged."""
        deadline = time.monotonic() + timeout
        while self.acks_after(t, p) < count:
            if self._crash:
                raise self._crash
            if time.monotonic() > deadline:
                where = f"partition {p}" if p is not None else "the topic"
                raise AssertionError(
                    f"{what or 'load'}: only {self.acks_after(t, p)} of {count} records produced "
                    f"to {where} after the mark were acknowledged in {timeout:.0f}s; "
                    f"{self.summary()}")
            time.sleep(0.05)

    def summary(self) -> str:
        with self._lock:
            errs = self.errors[:3]
            cerrs = sorted(set(self.client_errors))[:6]
            return (f"sent {dict(self.sent)}, acked {{{', '.join(f'{p}: {len(a)}' for p, a in self.acked.items())}}}, "
                    f"delivery errors {len(self.errors)} (first: {errs}), fatal {self.fatal}, "
                    f"client errors seen: {cerrs}")

    def assert_clean(self):
        """No record failed and the producer never hit a fatal (idempotence-violating) error."""
        assert self.unflushed == 0, f"{self.unflushed} records never got a delivery report; {self.summary()}"
        assert not self.fatal, f"fatal producer error (idempotence broken?): {self.fatal}; {self.summary()}"
        assert not self.errors, f"{len(self.errors)} records failed delivery; {self.summary()}"


# ---- reading back ---------------------------------------------------------------------------


def read_partition(bootstrap: str, topic: str, p: int, timeout: float = 60) -> tuple[dict[int, bytes], int, int]:
    """Every record of partition p from the log start to the high watermark:
    ({offset: value}, low, high). Fails if the watermark is not reached in time."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"scan-{random.randrange(1 << 30)}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "error",
        "fetch.max.bytes": 8 << 20,
        "socket.connection.setup.timeout.ms": 5000,
    })
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                break
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        c.assign([TopicPartition(topic, p, low)])
        out: dict[int, bytes] = {}
        while (not out or max(out) < high - 1) and high > low:
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}/{p}: read {len(out)} records of [{low}, {high}) "
                                     f"in {timeout}s")
            for m in c.consume(1000, timeout=1):
                if m.error():
                    if m.error().code() == -191:  # _PARTITION_EOF
                        continue
                    raise AssertionError(f"{topic}/{p}: consume error {m.error()}")
                if m.offset() < high:
                    out[m.offset()] = m.value()
        return out, low, high
    finally:
        c.close()


def check_partition(load: Load, p: int, bootstrap: str | None = None,
                    must_not_contain: tuple[bytes, ...] = ()) -> dict:
    """Read partition p whole and compare with what `load` produced and had acknowledged.
    Returns {"read": n, "acked": n}. Every problem is listed in the assertion message."""
    records, low, high = read_partition(bootstrap or load.bootstrap, load.topic, p)
    acked = dict(load.acked[p])
    problems = []
    if low != 0:
        problems.append(f"log start offset is {low}, not 0")
    missing_offsets = sorted(set(range(low, high)) - set(records))
    if missing_offsets:
        problems.append(f"{len(missing_offsets)} offsets below the high watermark {high} "
                        f"unreadable: {missing_offsets[:10]}")
    seen: dict[bytes, int] = {}
    dups, foreign, forbidden = [], [], []
    for off in sorted(records):
        v = records[off]
        if v in must_not_contain:
            forbidden.append((off, v))
        elif load.n_of(v) is None:
            foreign.append((off, v[:40]))
        if v in seen:
            dups.append((seen[v], off, v))
        seen.setdefault(v, off)
    if dups:
        problems.append(f"{len(dups)} duplicated values (first offset, again at, value): {dups[:5]}")
    if foreign:
        problems.append(f"{len(foreign)} records the load never produced: {foreign[:5]}")
    if forbidden:
        problems.append(f"records that must not be in the log: {forbidden[:5]}")
    lost = sorted((off, v) for v, off in acked.items() if v not in seen)
    if lost:
        problems.append(f"{len(lost)} acknowledged records missing (acked offset, value): {lost[:10]}")
    moved = sorted((off, seen[v], v) for v, off in acked.items() if v in seen and seen[v] != off)
    if moved:
        problems.append(f"{len(moved)} acknowledged records at another offset than acked "
                        f"(acked, found, value): {moved[:10]}")
    ns = [load.n_of(records[o]) for o in sorted(records) if load.n_of(records[o]) is not None]
    out_of_order = [(a, b) for a, b in zip(ns, ns[1:]) if b <= a]
    if out_of_order:
        problems.append(f"records out of production order (n then n'): {out_of_order[:10]}")
    assert not problems, (f"{load.topic}/{p} [{low}, {high}), {len(records)} read, "
                          f"{len(acked)} acked: " + "; ".join(problems))
    return {"read": len(records), "acked": len(acked)}


def check_all(load: Load, bootstrap: str | None = None, must_not_contain=()) -> dict:
    return {p: check_partition(load, p, bootstrap, must_not_contain) for p in load.partitions}
