"""A minimal Kafka wire client for the few requests the cluster suite sends to one chosen node.

The Kafka clients route every request by their own cached metadata; a test that asks "what
does node 2 think the leader is" or "does the fenced old leader refuse this produce" must talk
to one node directly, so these requests are built by hand:

  Metadata v12        brokers, and per partition leader, leader epoch, replicas, ISR, topic id
  FindCoordinator v2  the coordinator of a consumer group
  Produce v8          one record batch (magic 2, no producer id) to one partition

Only what those three need is implemented.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
from dataclasses import dataclass, field

try:  # the C implementation from the test venv; the table below is the fallback
    from crc32c import crc32c as _crc32c
except ImportError:  # pragma: no cover - exercised only without the crc32c wheel
    _CRC_TABLE = []
    for _n in range(256):
        _c = _n
        for _ in range(8):
            _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
        _CRC_TABLE.append(_c)

    def _crc32c(data: bytes) -> int:
        crc = 0xFFFFFFFF
        for b in data:
            crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF


ERRORS = {
    0: "NONE",
    1: "OFFSET_OUT_OF_RANGE",
    3: "UNKNOWN_TOPIC_OR_PARTITION",
    5: "LEADER_NOT_AVAILABLE",
    6: "NOT_LEADER_OR_FOLLOWER",
    7: "REQUEST_TIMED_OUT",
    14: "COORDINATOR_LOAD_IN_PROGRESS",
    15: "COORDINATOR_NOT_AVAILABLE",
    16: "NOT_COORDINATOR",
    19: "NOT_ENOUGH_REPLICAS",
    20: "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    74: "FENCED_LEADER_EPOCH",
    75: "UNKNOWN_LEADER_EPOCH",
}


def error_name(code: int) -> str:
    return f"{ERRORS.get(code, 'ERROR')}({code})"


class KafkaWireError(Exception):
    """The connection failed or the answer could not be read."""


# ---- encoding ---------------------------------------------------------------------------------


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _varint(n: int) -> bytes:  # zigzag, as record fields use
    return _uvarint((n << 1) ^ (n >> 63))


def _i8(n): return struct.pack(">b", n)
def _i16(n): return struct.pack(">h", n)
def _i32(n): return struct.pack(">i", n)
def _i64(n): return struct.pack(">q", n)


def _string(s: str | None) -> bytes:
    if s is None:
        return _i16(-1)
    b = s.encode()
    return _i16(len(b)) + b


def _compact_string(s: str | None) -> bytes:
    if s is None:
        return _uvarint(0)
    b = s.encode()
    return _uvarint(len(b) + 1) + b


def _bytes32(b: bytes | None) -> bytes:
    if b is None:
        return _i32(-1)
    return _i32(len(b)) + b


NO_TAGS = _uvarint(0)


class Reader:
    def __init__(self, data: bytes):
        self.d = data
        self.i = 0

    def take(self, n: int) -> bytes:
        if self.i + n > len(self.d):
            raise KafkaWireError(f"response truncated at {self.i} (+{n} of {len(self.d)})")
        b = self.d[self.i:self.i + n]
        self.i += n
        return b

    def i8(self): return struct.unpack(">b", self.take(1))[0]
    def i16(self): return struct.unpack(">h", self.take(2))[0]
    def i32(self): return struct.unpack(">i", self.take(4))[0]
    def i64(self): return struct.unpack(">q", self.take(8))[0]
    def boolean(self): return self.i8() != 0

    def uvarint(self) -> int:
        shift = n = 0
        while True:
            b = self.take(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    def string(self) -> str | None:
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def compact_string(self) -> str | None:
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1).decode()

    def compact_array(self, item) -> list:
        n = self.uvarint()
        return [] if n == 0 else [item() for _ in range(n - 1)]

    def array(self, item) -> list:
        n = self.i32()
        return [] if n < 0 else [item() for _ in range(n)]

    def uuid(self) -> str:
        return str(uuid.UUID(bytes=self.take(16)))

    def tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


# ---- a connection ---------------------------------------------------------------------------


class Conn:
    """One TCP connection to one node; requests are sent one at a time."""

    def __init__(self, host: str, port: int, timeout: float = 5.0):
        self.addr = (host, port)
        self.timeout = timeout
        try:
            self.sock = socket.create_connection(self.addr, timeout=timeout)
        except OSError as e:
            raise KafkaWireError(f"connect {host}:{port}: {e}") from e
        self.corr = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, api_key: int, version: int, body: bytes, flexible: bool) -> int:
        self.corr += 1
        header = _i16(api_key) + _i16(version) + _i32(self.corr) + _string("strata-cluster-tests")
        if flexible:
            header += NO_TAGS
        frame = header + body
        try:
            self.sock.sendall(_i32(len(frame)) + frame)
        except OSError as e:
            raise KafkaWireError(f"send to {self.addr}: {e}") from e
        return self.corr

    def receive(self, corr: int, flexible: bool, timeout: float | None = None) -> Reader:
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            size = struct.unpack(">i", self._exactly(4))[0]
            r = Reader(self._exactly(size))
        except (OSError, struct.error) as e:
            raise KafkaWireError(f"receive from {self.addr}: {e!r}") from e
        got = r.i32()
        if got != corr:
            raise KafkaWireError(f"correlation id {got}, expected {corr}")
        if flexible:
            r.tags()
        return r

    def _exactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise KafkaWireError(f"{self.addr} closed the connection")
            buf += chunk
        return bytes(buf)

    def request(self, api_key, version, body, flexible, timeout=None) -> Reader:
        return self.receive(self.send(api_key, version, body, flexible), flexible, timeout)


def split_addr(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host, int(port)


# ---- Metadata v12 ---------------------------------------------------------------------------


@dataclass
class Partition:
    partition: int
    error: int
    leader: int
    leader_epoch: int
    replicas: list[int]
    isr: list[int]
    offline: list[int]


@dataclass
class Topic:
    name: str
    error: int
    topic_id: str
    internal: bool
    partitions: dict[int, Partition] = field(default_factory=dict)


@dataclass
class Metadata:
    brokers: dict[int, tuple[str, int]]
    cluster_id: str | None
    controller_id: int
    topics: dict[str, Topic]


def metadata(addr: str, topics: list[str] | None = None, timeout: float = 5.0) -> Metadata:
    """Metadata v12 from the node at addr (no auto-creation). topics=None: all topics."""
    if topics is None:
        t = _uvarint(0)
    else:
        t = _uvarint(len(topics) + 1) + b"".join(
            b"\0" * 16 + _compact_string(name) + NO_TAGS for name in topics)
    body = t + _i8(0) + _i8(0) + NO_TAGS  # allow_auto_topic_creation, include_topic_authorized_operations
    with Conn(*split_addr(addr), timeout=timeout) as c:
        r = c.request(3, 12, body, flexible=True)
    r.i32()  # throttle

    def broker():
        node, host, port = r.i32(), r.compact_string(), r.i32()
        r.compact_string()  # rack
        r.tags()
        return node, (host, port)

    brokers = dict(r.compact_array(broker))
    cluster_id = r.compact_string()
    controller_id = r.i32()

    def partition():
        err, idx, leader, epoch = r.i16(), r.i32(), r.i32(), r.i32()
        replicas = r.compact_array(r.i32)
        isr = r.compact_array(r.i32)
        offline = r.compact_array(r.i32)
        r.tags()
        return Partition(idx, err, leader, epoch, replicas, isr, offline)

    def topic():
        err, name, tid, internal = r.i16(), r.compact_string(), r.uuid(), r.boolean()
        parts = r.compact_array(partition)
        r.i32()  # authorized operations
        r.tags()
        return Topic(name, err, tid, internal, {p.partition: p for p in parts})

    tops = {t.name: t for t in r.compact_array(topic)}
    r.tags()
    return Metadata(brokers, cluster_id, controller_id, tops)


# ---- FindCoordinator v2 ----------------------------------------------------------------------


@dataclass
class Coordinator:
    error: int
    message: str | None
    node_id: int
    host: str
    port: int


def find_coordinator(addr: str, group: str, timeout: float = 5.0, key_type: int = 0) -> Coordinator:
    body = _string(group) + _i8(key_type)  # key type 0: group, 1: transactional id
    with Conn(*split_addr(addr), timeout=timeout) as c:
        r = c.request(10, 2, body, flexible=False)
    r.i32()  # throttle
    return Coordinator(r.i16(), r.string(), r.i32(), r.string(), r.i32())


# ---- Produce v8 ------------------------------------------------------------------------------


def record_batch(values: list[bytes], timestamp_ms: int | None = None) -> bytes:
    """A magic-2 record batch with null keys and no producer id (not idempotent)."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    recs = b""
    for i, v in enumerate(values):
        body = _i8(0) + _varint(0) + _varint(i) + _varint(-1) + _varint(len(v)) + v + _varint(0)
        recs += _varint(len(body)) + body
    after_crc = (
        _i16(0)  # attributes
        + _i32(len(values) - 1)  # last offset delta
        + _i64(ts) + _i64(ts)
        + _i64(-1) + _i16(-1) + _i32(-1)  # producer id, epoch, base sequence
        + _i32(len(values))
        + recs
    )
    crc = struct.pack(">I", _crc32c(after_crc))
    after_length = _i32(-1) + _i8(2) + crc + after_crc  # partition leader epoch, magic
    return _i64(0) + _i32(len(after_length)) + after_length


@dataclass
class ProduceResult:
    error: int
    base_offset: int
    message: str | None


class PendingProduce:
    """A Produce request already written to the socket, its answer not yet read."""

    def __init__(self, conn: Conn, corr: int):
        self.conn, self.corr = conn, corr

    def result(self, timeout: float) -> ProduceResult:
        try:
            r = self.conn.receive(self.corr, flexible=False, timeout=timeout)
        finally:
            self.conn.close()

        def partition():
            r.i32()  # partition index
            err, base = r.i16(), r.i64()
            r.i64()  # log append time
            r.i64()  # log start offset
            r.array(lambda: (r.i32(), r.string()))  # record errors
            return ProduceResult(err, base, r.string())

        topics = r.array(lambda: (r.string(), r.array(partition)))
        return topics[0][1][0]


def send_produce(addr: str, topic: str, partition: int, values: list[bytes], acks: int = -1,
                 timeout_ms: int = 5000, connect_timeout: float = 5.0) -> PendingProduce:
    """Write a Produce v8 request to the node at addr and return without reading the answer
    (so that it can be sent to a stopped process and read after SIGCONT)."""
    body = (
        _string(None) + _i16(acks) + _i32(timeout_ms)
        + _i32(1) + _string(topic)
        + _i32(1) + _i32(partition) + _bytes32(record_batch(values))
    )
    c = Conn(*split_addr(addr), timeout=connect_timeout)
    try:
        return PendingProduce(c, c.send(0, 8, body, flexible=False))
    except Exception:
        c.close()
        raise
