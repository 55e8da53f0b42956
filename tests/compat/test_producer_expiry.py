"""producer.id.expiration.ms: a partition forgets the state of a producer (its epoch and the
sequence numbers it checks duplicates against) once the producer has been idle that long with
no transaction open, and a producer that writes again after that is taken as new. The broker
runs with a 6-second expiration checked every 500 ms (Kafka's defaults are a day and ten
minutes)."""

from __future__ import annotations

import subprocess

import pytest
from confluent_kafka import Producer

from helpers import broker_settings, create_topic
from strata_testlib import KAFKA_LIBS, wait_for

EXPIRATION_MS = 6000
KAFKA_PROPS = (f"producer.id.expiration.ms={EXPIRATION_MS}\n"
               "producer.id.expiration.check.interval.ms=500")
STRATA_ARGS = (f"--producer-id-expiration-ms {EXPIRATION_MS} "
               "--producer-id-expiration-check-interval-ms 500")


@pytest.fixture(scope="module")
def _expiry_props():
    with broker_settings(KAFKA_PROPS, STRATA_ARGS):
        yield


@pytest.fixture(scope="module")
def broker(_expiry_props, broker):  # noqa: F811 - conftest's broker, started with the props
    return broker


def producer_ids(bs: str, topic: str) -> set[str]:
    """The producer ids DescribeProducers lists for partition 0 (kafka-transactions.sh)."""
    if not KAFKA_LIBS.is_dir():
        pytest.fail(f"{KAFKA_LIBS} missing: run tests/testbed/install.sh")
    r = subprocess.run(["java", "-Xmx256m", "-cp", f"{KAFKA_LIBS}/*",
                        "org.apache.kafka.tools.TransactionsCommand", "--bootstrap-server", bs,
                        "describe-producers", "--topic", topic, "--partition", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    rows = [ln.split("\t") for ln in r.stdout.splitlines() if "\t" in ln]
    head = [h.strip() for h in rows[0]]
    return {dict(zip(head, (c.strip() for c in row)))["ProducerId"] for row in rows[1:]}


def send(p: Producer, topic: str, value: bytes):
    errors = []
    p.produce(topic, value=value, partition=0,
              on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(30) == 0
    assert errors == [None], errors


def test_idle_producer_state_expires_and_an_open_transaction_keeps_it(broker, topic):
    bs = broker.bootstrap
    create_topic(bs, topic, 1)
    txn = Producer({"bootstrap.servers": bs, "transactional.id": f"expiry-{topic}",
                    "transaction.timeout.ms": 60000, "linger.ms": 0})
    txn.init_transactions(30)
    txn.begin_transaction()
    send(txn, topic, b"open")
    idle = Producer({"bootstrap.servers": bs, "enable.idempotence": True, "linger.ms": 0})
    send(idle, topic, b"idle-1")
    both = producer_ids(bs, topic)
    assert len(both) == 2, both

    # The idempotent producer goes once it has been idle past the expiration; the
    # transactional one stays, its transaction open however long it waits.
    wait_for(lambda: len(producer_ids(bs, topic)) == 1, 30, "the idle producer expired",
             every=1)
    left = producer_ids(bs, topic)
    # A producer whose state expired writes on (its next sequence is accepted as new).
    send(idle, topic, b"idle-2")
    assert producer_ids(bs, topic) == both
    txn.commit_transaction(30)
    # Once the transaction ended, the transactional producer expires too.
    wait_for(lambda: not producer_ids(bs, topic), 30, "every producer expired", every=1)
    assert left <= both
    idle.flush(10)
