"""Client helpers for the security suite: produce and consume with confluent-kafka and
kafka-python under given settings, and SCRAM users through the Admin API."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)


def add_scram_user(conf: dict, user: str, password: str, mechanisms=("SCRAM-SHA-256", "SCRAM-SHA-512"),
                   iterations: int = 4096):
    admin = AdminClient(conf)
    ups = [UserScramCredentialUpsertion(
        user, ScramCredentialInfo(getattr(ScramMechanism, m.replace("-", "_")), iterations),
        password.encode()) for m in mechanisms]
    for _, f in admin.alter_user_scram_credentials(ups).items():
        f.result(30)


def ck_produce(conf: dict, topic: str, n: int = 10, timeout: float = 30) -> tuple[int, list[str]]:
    """Produce n records; (delivered, errors seen)."""
    errors: list[str] = []
    delivered = [0]

    def on_delivery(err, _msg):
        if err is None:
            delivered[0] += 1
        else:
            errors.append(f"{err.name()}: {err.str()}")

    p = Producer({**conf, "error_cb": lambda e: errors.append(f"{e.name()}: {e.str()}"),
                  "message.timeout.ms": int(timeout * 1000), "linger.ms": 5})
    for i in range(n):
        p.produce(topic, f"v{i}".encode(), key=f"k{i}".encode(), on_delivery=on_delivery)
    p.flush(timeout + 5)
    return delivered[0], errors


def ck_consume(conf: dict, topic: str, n: int, group: str | None = None,
               timeout: float = 30) -> tuple[list[bytes], list[str]]:
    errors: list[str] = []
    c = Consumer({**conf, "group.id": group or f"g-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": True,
                  "error_cb": lambda e: errors.append(f"{e.name()}: {e.str()}")})
    c.subscribe([topic])
    got: list[bytes] = []
    deadline = time.time() + timeout
    try:
        while len(got) < n and time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    errors.append(f"{m.error().name()}: {m.error().str()}")
                    if m.error().fatal() or "AUTHORIZATION" in m.error().name():
                        break
                continue
            got.append(m.value())
    finally:
        c.close()
    return got, errors
