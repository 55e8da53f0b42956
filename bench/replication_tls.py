"""Replication over mutual TLS against plaintext: three nodes and a controller, a topic at
replication factor 3, acks=all produce from Kafka's Java ProducerPerformance.

    python3 bench/replication_tls.py [--records N] [--out FILE]

Each node has two listeners: CLIENTS (plaintext, where the producer connects) and
REPLICATION, where followers fetch. The two runs differ only in REPLICATION's protocol:
PLAINTEXT, or SSL with --inter-broker-tls-ca-file (mutual TLS, node certificates made for the
run). acks=all waits for both followers, so the replication path is on every produce's
latency. Prints MB/s and p50/p99 per run and the TLS/plaintext ratios; writes JSON (--out).
Binaries: STRATA_NODE_BIN and STRATA_OPERATOR_BIN (release builds recommended)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
for d in ("tests/lib", "tests/cluster", "tests/security"):
    sys.path.insert(0, str(HERE.parent / d))
from harness import Cluster, Topology, create_topic  # noqa: E402
from pki import Pki  # noqa: E402
from strata_testlib import free_port  # noqa: E402

sys.path.insert(0, str(HERE))
from security import produce  # noqa: E402

PARTITIONS = 6


def node_cert(pki: Pki, work: Path) -> tuple[Path, Path]:
    """A node certificate signed by the run's CA: server and client use (nodes replicate over
    mutual TLS), valid for localhost and 127.0.0.1."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "strata-node")]))
            .issuer_name(pki.ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                False)
            .sign(pki.ca.key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    cert_path, key_path = work / "node.pem", work / "node.key"
    cert_path.write_bytes(cert.public_bytes(pem) + pki.ca.cert.public_bytes(pem))
    key_path.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Clients:
    """What security.produce needs of a broker: the port of a listener on 127.0.0.1."""

    def __init__(self, port: int):
        self.ports = {"PLAINTEXT": port}


def run(mode: str, work: Path, pki: Pki, records: int) -> dict:
    replication: dict[int, int] = {}
    clients: dict[int, int] = {}

    def ports(i: int, addr: str) -> tuple[int, int]:
        return replication.setdefault(i, free_port()), clients.setdefault(i, free_port())

    def listeners(i: int, addr: str) -> str:
        r, c = ports(i, addr)
        return f"REPLICATION://127.0.0.1:{r},CLIENTS://127.0.0.1:{c}"

    args = {
        "--listeners": listeners,
        "--advertised-listeners": listeners,
        "--inter-broker-listener-name": "REPLICATION",
        "--listener-security-protocol-map":
            f"REPLICATION:{'SSL' if mode == 'mtls' else 'PLAINTEXT'},CLIENTS:PLAINTEXT",
        "--flush-policy": "never",
    }
    if mode == "mtls":
        cert, key = node_cert(pki, work)
        args.update({"--tls-cert-file": cert, "--tls-key-file": key,
                     "--inter-broker-tls-ca-file": pki.ca_file})
    topo = Topology(3)
    topo._loopback("benchmark on loopback")
    c = Cluster(topo, work / mode, node_args=args)
    # The harness reaches nodes on their listen address; here that is CLIENTS.
    for i, n in c.nodes.items():
        n.addr = f"127.0.0.1:{ports(i, n.addr)[1]}"
    try:
        c.start()
        create_topic(c.bootstrap(), "bench", PARTITIONS, 3)
        c.wait_full_isr("bench", timeout=60)
        got = produce(Clients(clients[1]), "PLAINTEXT", _props(work), "bench", records)
        c.wait_full_isr("bench", timeout=60)
        return got
    finally:
        c.stop()


def _props(work: Path) -> Path:
    p = work / "plaintext.properties"
    p.write_text("security.protocol=PLAINTEXT\n")
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="strata-repl-tls-") as d:
        work = Path(d)
        pki = Pki(work / "pki")
        results = {m: run(m, work, pki, a.records) for m in ("plaintext", "mtls")}
    print(f"{'replication':<12} {'MB/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for m, r in results.items():
        print(f"{m:<12} {r['mb_per_s']:>8.1f} {r['p50_ms']:>8} {r['p99_ms']:>8}")
    p, t = results["plaintext"], results["mtls"]
    ratios = {"throughput": t["mb_per_s"] / p["mb_per_s"],
              "p99": t["p99_ms"] / max(p["p99_ms"], 1)}
    print(f"mTLS/plaintext: throughput x{ratios['throughput']:.2f}, p99 x{ratios['p99']:.2f}")
    if a.out:
        Path(a.out).write_text(json.dumps({"results": results, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
