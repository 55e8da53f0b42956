"""Test key material made with `cryptography`: a CA with server and client certificates, an
untrusted CA, and RS256 JSON Web Tokens with their JSON Web Key Set."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(**parts) -> x509.Name:
    oids = {"CN": NameOID.COMMON_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
            "O": NameOID.ORGANIZATION_NAME, "C": NameOID.COUNTRY_NAME}
    # Most specific last in DER order, so RFC 2253 text starts with CN.
    order = ["C", "O", "OU", "CN"]
    return x509.Name([x509.NameAttribute(oids[k], parts[k]) for k in order if k in parts])


def _pem_key(k) -> bytes:
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def _pem_cert(c) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)


class CA:
    def __init__(self, cn: str):
        self.key = _key()
        now = dt.datetime.now(dt.timezone.utc)
        name = _name(CN=cn, O="Strata Tests")
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(minutes=5))
                     .not_valid_after(now + dt.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                                  False, False), True)
                     .sign(self.key, hashes.SHA256()))

    def issue(self, subject: x509.Name, server: bool, days: float = 1.0):
        key = _key()
        now = dt.datetime.now(dt.timezone.utc)
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=days))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
             .add_extension(x509.ExtendedKeyUsage(
                 [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                 False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                False)
        return key, b.sign(self.key, hashes.SHA256())


class Pki:
    """Files under `dir`: ca.pem, server.pem/server.key, and per client NAME.pem/NAME.key."""

    def __init__(self, dir: Path):
        self.dir = dir
        dir.mkdir(parents=True, exist_ok=True)
        self.ca = CA("strata-test-ca")
        self.rogue = CA("rogue-ca")
        self.ca_file = self._write("ca.pem", _pem_cert(self.ca.cert))
        self.server_cert, self.server_key = self.server("server")

    def _write(self, name: str, data: bytes) -> Path:
        p = self.dir / name
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.rename(p)
        return p

    def server(self, name: str, cn: str = "localhost") -> tuple[Path, Path]:
        key, cert = self.ca.issue(_name(CN=cn, O="Strata Tests"), server=True)
        return (self._write(f"{name}.pem", _pem_cert(cert) + _pem_cert(self.ca.cert)),
                self._write(f"{name}.key", _pem_key(key)))

    def client(self, name: str, rogue: bool = False, **subject) -> tuple[Path, Path]:
        ca = self.rogue if rogue else self.ca
        key, cert = ca.issue(_name(**subject), server=False)
        return (self._write(f"{name}.pem", _pem_cert(cert)),
                self._write(f"{name}.key", _pem_key(key)))

    def rotate_server(self, cn: str) -> bytes:
        """Replace server.pem/server.key in place (as a Secret update does); returns the new
        certificate's DER."""
        key, cert = self.ca.issue(_name(CN=cn, O="Strata Tests"), server=True)
        # Key first then cert: the node only uses a pair that matches.
        self._write("server.key.new", _pem_key(key))
        self._write("server.pem.new", _pem_cert(cert) + _pem_cert(self.ca.cert))
        (self.dir / "server.key.new").rename(self.server_key)
        (self.dir / "server.pem.new").rename(self.server_cert)
        return cert.public_bytes(serialization.Encoding.DER)


def _b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _int_b64(n: int) -> str:
    return _b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class TokenIssuer:
    """An RS256 issuer: `jwks` is its key set, `token()` signs claims."""

    def __init__(self, kid: str = "k1", issuer: str = "https://issuer.test"):
        self.key = _key()
        self.kid = kid
        self.issuer = issuer
        pub = self.key.public_key().public_numbers()
        self.jwks = {"keys": [{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                               "n": _int_b64(pub.n), "e": _int_b64(pub.e)}]}

    def token(self, sub: str, lifetime_s: float = 300, **claims) -> tuple[str, float]:
        now = time.time()
        body = {"sub": sub, "iss": self.issuer, "iat": int(now), "exp": int(now + lifetime_s),
                "aud": "strata", **claims}
        head = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signing = f"{_b64url(json.dumps(head).encode())}.{_b64url(json.dumps(body).encode())}"
        sig = self.key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{_b64url(sig)}", now + lifetime_s
