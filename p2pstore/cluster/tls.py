"""TLS for node-to-node traffic: the cluster CA, node certificates, and ``ssl`` contexts.

Why mutual TLS: a peer proves it belongs to the cluster by holding a key whose certificate the
cluster CA signed, and every byte between nodes is encrypted and integrity-protected, answers
and RPC frames included (the signed plain mode protects requests only; see docs/security.md).
Certificates are made with the ``cryptography`` package (ECDSA P-256, SHA-256); the
connections themselves are the standard ``ssl`` module's, TLS 1.2 at least.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
CA_DAYS = 3650
NODE_DAYS = 825
LOCAL_NAMES = ("localhost", "127.0.0.1")


def server_context(ca: str, cert: str, key: str) -> ssl.SSLContext:
    """The internal listener's context: it requires a client certificate the CA signed."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(cert, key)
    return ctx


def client_context(ca: str, cert: str, key: str) -> ssl.SSLContext:
    """A node's context for calling peers: presents its certificate, trusts only the cluster CA
    and checks that the peer's certificate names the host it called."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def public_context(cert: str, key: str) -> ssl.SSLContext:
    """The public and S3 ports' context (HTTPS; clients are not asked for certificates)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


@dataclass(frozen=True)
class NodeFiles:
    """Where one node's certificate and key were written."""

    name: str
    cert: Path
    key: Path


def _write_key(path: Path, pem: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)  # before the key is in it
    path.write_bytes(pem)


def ensure_ca(out: Path, name: str = "p2pstore cluster CA") -> tuple[Path, Path]:
    """The CA in ``out`` (made when absent; kept when present, so nodes can be added later)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = out / CA_CERT, out / CA_KEY
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    _write_key(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))  # fmt: skip
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _alt_name(name: str) -> object:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_node_cert(out: Path, name: str, hosts: list[str]) -> NodeFiles:
    """A certificate for one node, signed by the CA in ``out``, valid for ``hosts`` (the names
    and addresses peers call it by), usable as server and as client."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert_path, ca_key_path = ensure_ca(out)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names = list(dict.fromkeys(hosts))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]  # both ends of a connection
    authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())  # type: ignore[arg-type]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=NODE_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_alt_name(n) for n in names]), critical=False)  # type: ignore[misc]
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(authority, critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )  # fmt: skip
    files = NodeFiles(name, out / f"{name}.pem", out / f"{name}-key.pem")
    _write_key(files.key, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))  # fmt: skip
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def make_cluster_certs(out: Path, nodes: int = 0, hosts: list[str] | None = None) -> list[NodeFiles]:
    """The CA plus ``nodes`` certificates for local nodes (``node<i>``, valid for localhost and
    127.0.0.1) and one per name in ``hosts`` (named after it, valid for it)."""
    made = [make_node_cert(out, f"node{i}", list(LOCAL_NAMES)) for i in range(nodes)]
    return made + [make_node_cert(out, host, [host]) for host in hosts or []]
