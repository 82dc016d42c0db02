"""`p2pstore cluster certs`: a cluster CA and node certificates that the ssl module accepts,
keys readable by their owner only, the CA kept when more nodes are added later."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

from cryptography import x509

from tests.support.processes import run_cli


def test_cluster_certs_makes_a_ca_and_node_certificates(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    hosts = ("--host", "db1.example", "--host", "10.1.2.3")
    res = run_cli("cluster", "certs", "--out", str(out), "--nodes", "2", *hosts)
    assert res.returncode == 0, res.stderr
    assert b"--cluster-ca" in res.stdout and b"node1" in res.stdout
    for name in ("node0", "node1", "db1.example", "10.1.2.3"):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(out / "ca.pem"))
        ctx.load_cert_chain(out / f"{name}.pem", out / f"{name}-key.pem")  # the key fits the cert
        assert stat.S_IMODE((out / f"{name}-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "ca-key.pem").stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((out / "db1.example.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["db1.example"]
    ip = x509.load_pem_x509_certificate((out / "10.1.2.3.pem").read_bytes())
    san = ip.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]

    before = (out / "ca.pem").read_bytes()
    assert run_cli("cluster", "certs", "--out", str(out), "--host", "db2.example").returncode == 0
    assert (out / "ca.pem").read_bytes() == before  # the same CA signs the new node
    x509.load_pem_x509_certificate((out / "db2.example.pem").read_bytes()).verify_directly_issued_by(ca)

    res = run_cli("cluster", "certs", "--out", str(out))
    assert res.returncode != 0 and b"--nodes" in res.stderr
