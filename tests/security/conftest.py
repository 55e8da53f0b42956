"""Fixtures for the security suite: test key material (pki.py), strata-node processes with
several listeners, and runners for Kafka's Java tools with client properties.

  STRATA_NODE_BIN   strata-node binary (default <repo>/target/debug/strata-node)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from strata_testlib import KAFKA_LIBS, Proc, free_port, node_bin, port_open, wait_for
from strata_testlib.proc import ANSI

from pki import Pki, TokenIssuer

LISTENERS = ("PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT")


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    p = Pki(tmp_path_factory.mktemp("pki"))
    p.alice = p.client("alice", CN="alice", OU="Eng", O="Acme", C="US")
    p.admin = p.client("admin", CN="admin", O="Acme")
    p.mallory = p.client("mallory", rogue=True, CN="mallory")
    return p


@pytest.fixture(scope="session")
def issuer(tmp_path_factory) -> TokenIssuer:
    i = TokenIssuer()
    i.jwks_file = tmp_path_factory.mktemp("jwks") / "jwks.json"
    i.jwks_file.write_text(json.dumps(i.jwks))
    return i


class SecureNode:
    """A standalone strata-node with a PLAINTEXT, an SSL, a SASL_SSL and a SASL_PLAINTEXT
    listener, each on its own port."""

    def __init__(self, workdir: Path, pki: Pki, issuer: TokenIssuer, extra: list[str]):
        self.ports = {name: free_port() for name in LISTENERS}
        self.metrics_port = free_port()
        self.pki = pki
        listeners = ",".join(f"{n}://127.0.0.1:{p}" for n, p in self.ports.items())
        args = [
            node_bin(), "--data-dir", workdir / "data", "--node-id", "1",
            "--listeners", listeners,
            "--tls-cert-file", pki.server_cert, "--tls-key-file", pki.server_key,
            "--tls-client-ca-file", pki.ca_file, "--tls-client-auth", "requested",
            "--tls-reload-interval-ms", "200",
            "--ssl-principal-mapping-rules", "RULE:^CN=([^,]*),.*$/$1/,DEFAULT",
            "--sasl-enabled-mechanisms", "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER",
            "--oauth-jwks", issuer.jwks_file, "--oauth-expected-issuer", issuer.issuer,
            "--oauth-expected-audience", "strata",
            "--group-initial-rebalance-delay-ms", "0",
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            # Failures from one address double the delay (up to 64x): keep it short, since
            # every client here is 127.0.0.1 and several tests fail on purpose.
            "--failed-authentication-delay-ms", "20",
            *extra,
        ]
        self.proc = Proc("strata-node", args, workdir / "strata-node.log",
                         env={"RUST_LOG": "info,strata_node::security=debug"})
        self.start()

    def start(self):
        self.proc.start()
        wait_for(lambda: all(port_open(p) for p in self.ports.values()), 60, "listeners open")

    def stop(self):
        self.proc.stop()

    def bootstrap(self, listener: str) -> str:
        return f"127.0.0.1:{self.ports[listener]}"

    def log(self) -> str:
        return ANSI.sub("", self.proc.log_path.read_text(errors="replace"))

    def metrics(self) -> dict[str, float]:
        """The node's /metrics samples: `name{labels}` -> value."""
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out


def make_node(tmp_path_factory, pki, issuer, name, extra) -> SecureNode:
    n = SecureNode(tmp_path_factory.mktemp(name), pki, issuer, extra)
    return n


# ---- client settings ----------------------------------------------------------------------


def ck_conf(node: SecureNode, listener: str, **kw) -> dict:
    """confluent-kafka (librdkafka) settings for `listener`; kw: user/password/mechanism,
    cert (a (pem, key) pair), or oauth_cb."""
    c = {"bootstrap.servers": node.bootstrap(listener), "security.protocol": listener}
    if listener in ("SSL", "SASL_SSL"):
        c["ssl.ca.location"] = str(node.pki.ca_file)
        c["ssl.endpoint.identification.algorithm"] = "https"
    if kw.get("cert"):
        pem, key = kw["cert"]
        c["ssl.certificate.location"] = str(pem)
        c["ssl.key.location"] = str(key)
    if listener.startswith("SASL"):
        c["sasl.mechanism"] = kw.get("mechanism", "SCRAM-SHA-512")
        if "oauth_cb" in kw:
            c["oauth_cb"] = kw["oauth_cb"]
        else:
            c["sasl.username"] = kw["user"]
            c["sasl.password"] = kw["password"]
    return c


def java_props(path: Path, node: SecureNode, listener: str, **kw) -> Path:
    """A Java client properties file for `listener` (SCRAM or mTLS)."""
    lines = [f"security.protocol={listener}"]
    if listener in ("SSL", "SASL_SSL"):
        lines += ["ssl.truststore.type=PEM", f"ssl.truststore.location={node.pki.ca_file}"]
    if kw.get("cert"):
        pem, key = kw["cert"]
        # A PEM keystore: key then certificate in one file.
        ks = path.with_suffix(".keystore.pem")
        ks.write_text(Path(key).read_text() + Path(pem).read_text())
        lines += ["ssl.keystore.type=PEM", f"ssl.keystore.location={ks}"]
    if listener.startswith("SASL"):
        mech = kw.get("mechanism", "SCRAM-SHA-512")
        module = ("org.apache.kafka.common.security.plain.PlainLoginModule" if mech == "PLAIN"
                  else "org.apache.kafka.common.security.scram.ScramLoginModule")
        lines += [f"sasl.mechanism={mech}",
                  f'sasl.jaas.config={module} required username="{kw["user"]}" '
                  f'password="{kw["password"]}";']
    path.write_text("\n".join(lines) + "\n")
    return path


def tool(cls: str, *args, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["java", "-Xmx256m", "-cp", f"{KAFKA_LIBS}/*", cls, *map(str, args)],
                       capture_output=True, text=True, timeout=120)
    if ok:
        assert r.returncode == 0, f"{cls} {args} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r
