"""Node-to-node security settings: TLS files in complete sets, plain HTTP only when asked for,
and the addresses a TLS node advertises (its internal port) and serves clients on."""

from __future__ import annotations

import pytest

from p2pstore.config import NodeConfig, from_env

TLS = {"cluster_ca": "ca.pem", "node_cert": "n.pem", "node_key": "n-key.pem"}


def test_a_clustered_node_without_tls_must_say_insecure_plain() -> None:
    with pytest.raises(ValueError, match="insecure_plain"):
        NodeConfig(cluster_secret="s").validate()
    NodeConfig(cluster_secret="s", insecure_plain=True).validate()
    NodeConfig().validate()  # a standalone node (no secret) has no node-to-node traffic
    cfg = NodeConfig(cluster_secret="s", insecure_plain=True)
    assert cfg.plain_warning and "plain HTTP" in cfg.plain_warning
    assert NodeConfig(**TLS).plain_warning is None


@pytest.mark.parametrize(
    "values",
    [{"cluster_ca": "ca.pem"}, {"node_cert": "n.pem", "node_key": "k.pem"}, {**TLS, "insecure_plain": True},
     {"tls_cert": "c.pem"}, {**TLS, "port": 7000, "internal_port": 7000}],
)  # fmt: skip
def test_inconsistent_security_settings_are_refused(values: dict) -> None:
    with pytest.raises(ValueError):
        NodeConfig(**values).validate()


def test_a_tls_node_advertises_its_internal_port_and_serves_clients_on_its_own() -> None:
    cfg = NodeConfig(**TLS, host="10.0.0.1", port=7000)
    cfg.validate()
    assert cfg.internal_tls and cfg.internal_listen_port == 8000
    assert cfg.advertise_address == "10.0.0.1:8000" and cfg.url == "http://10.0.0.1:7000"
    named = NodeConfig(**TLS, host="0.0.0.0", port=7000, internal_port=7443, advertise="node1:7443",
                       tls_cert="c.pem", tls_key="k.pem")  # fmt: skip
    assert named.advertise_address == "node1:7443" and named.url == "https://node1:7000"
    plain = NodeConfig(host="10.0.0.1", port=7000)
    assert plain.internal_listen_port == 7000 and plain.advertise_address == "10.0.0.1:7000"


def test_insecure_plain_from_the_environment() -> None:
    cfg = from_env(env={"P2PSTORE_CLUSTER_SECRET": "s", "P2PSTORE_INSECURE_PLAIN": "true"})
    assert cfg.insecure_plain is True
    with pytest.raises(ValueError, match="P2PSTORE_INSECURE_PLAIN"):
        from_env(env={"P2PSTORE_INSECURE_PLAIN": "maybe"})
