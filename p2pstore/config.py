"""Node configuration: one dataclass, filled from CLI flags and ``P2PSTORE_*`` variables.

Every field is documented in docs/configuration.md; the environment variable for a field is
``P2PSTORE_`` + the upper-cased field name (``data_dir`` -> ``P2PSTORE_DATA_DIR``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "P2PSTORE_"
INTERNAL_PORT_OFFSET = 1000  # the internal TLS port's default distance from the node's port


@dataclass
class NodeConfig:
    """Everything one node needs to run; defaults suit a LAN cluster."""

    data_dir: Path = Path("./p2pstore-data")
    host: str = "127.0.0.1"
    port: int = 7000
    advertise: str = ""  # host:port other nodes use to reach us; default host:port
    seeds: list[str] = field(default_factory=list)  # host:port of nodes to join through
    replaces: str = ""  # id of a dead member whose place an empty data dir takes (replaced disk)
    cluster_secret: str = ""  # shared by all nodes; signs /_internal/ requests when TLS is off
    cluster_ca: str = ""  # PEM file: the cluster CA; with node_cert/node_key turns on mutual TLS
    node_cert: str = ""  # PEM file: this node's certificate, signed by the cluster CA
    node_key: str = ""  # PEM file: its private key
    internal_port: int = 0  # the mutual-TLS port for node-to-node traffic; 0 = port + 1000
    insecure_plain: bool = False  # node-to-node traffic in plain HTTP, signed with the secret
    tls_cert: str = ""  # PEM file: certificate for the public and S3 ports (HTTPS); "" = HTTP
    tls_key: str = ""  # PEM file: its private key
    api_token: str = ""  # when set, public endpoints need "Authorization: Bearer <token>"
    chunk_size: int = 4 * 1024 * 1024
    replicas: int = 3  # R
    write_quorum: int = 2  # W
    gossip_interval: float = 0.5  # seconds per protocol period
    checkpoint_interval: float = 300.0  # seconds; 0 disables the timer
    checkpoint_keep: int = 5
    max_key_bytes: int = 1024
    max_upload_bytes: int = 0  # 0 = unlimited
    min_free_bytes: int = 64 * 1024 * 1024  # refuse writes (507) below this much free disk
    dead_after: float = 600.0  # seconds dead before leader re-replicates its files
    tombstone_grace: float = 3600.0  # seconds after all replicas saw a delete before GC
    repair_rate: float = 0.0  # bytes/s for re-sync; 0 = unthrottled
    scrub_rate: float = 16 * 1024 * 1024  # bytes/s the scrubber reads
    scrub_chunk_rate: float = 20.0  # chunks/s the scrubber checks at most; 0 = only scrub_rate limits
    gc_scan_rate: float = 200.0  # chunk names/s the orphan scan checks; 0 = a whole walk per round
    fsync: str = "always"  # always | batch | never
    read_lease: float = 2.0  # seconds a read lease runs; 0 = every GET asks a read quorum
    cache_written: str = "gateway"  # gateway | all: whose written chunk files stay in the page cache
    read_buffer_bytes: int = 32 * 1024 * 1024  # chunk buffers all reads through this node hold at once
    stall_timeout: float = 3.0  # seconds a replica may stop reading a write or sending a chunk
    header_timeout: float = 20.0  # seconds a client may take to send a request head
    body_timeout: float = 30.0  # window over which a request body must keep min_body_rate
    min_body_rate: float = 1024.0  # bytes/s a client's request body must average per window
    max_uploads_per_client: int = 64  # requests with a body in progress per client address; 0 = no cap
    s3_port: int = 0  # the S3 API's port; 0 = off
    s3_region: str = "us-east-1"  # the region S3 clients sign for
    s3_upload_max_age: float = 7 * 86400.0  # seconds an idle multipart upload is kept
    s3_domain: list[str] = field(default_factory=list)  # <bucket>.<domain> hosts: virtual-host style
    lifecycle_clock_offset: float = 0.0  # seconds added to the time lifecycle rules see (tests)
    log_level: str = "INFO"

    @property
    def internal_tls(self) -> bool:
        """Node-to-node traffic goes over mutual TLS, to its own port."""
        return bool(self.cluster_ca)

    @property
    def internal_listen_port(self) -> int:
        """The port peers call: the internal TLS port, or (plain) the node's own port."""
        if not self.internal_tls:
            return self.port
        return self.internal_port or self.port + INTERNAL_PORT_OFFSET

    @property
    def advertise_address(self) -> str:
        """The host:port that other nodes should use to reach this one (its internal port)."""
        return self.advertise or f"{self.host}:{self.internal_listen_port}"

    @property
    def url(self) -> str:
        """Where clients reach this node: its public port, on the advertised host."""
        host = self.advertise_address.rsplit(":", 1)[0] if self.advertise else self.host
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.port}"

    @property
    def plain_warning(self) -> str | None:
        """Why node-to-node traffic is not protected by TLS, when it is not (log and /status)."""
        if self.internal_tls or not self.cluster_secret:
            return None
        return ("node-to-node traffic is plain HTTP (--insecure-plain): signed with the cluster "
                "secret against replay and tampering, but readable by anyone on the network")  # fmt: skip

    def validate(self) -> None:
        """Raise ValueError with a clear message for an inconsistent configuration."""
        if not 1 <= self.write_quorum <= self.replicas:
            raise ValueError(f"write_quorum must be 1..replicas ({self.replicas})")
        if self.chunk_size < 4096:
            raise ValueError("chunk_size must be at least 4096 bytes")
        if not (self.read_lease == 0 or 0.5 <= self.read_lease <= 60):
            raise ValueError("read_lease must be 0 (off) or 0.5..60 seconds")
        if self.fsync not in ("always", "batch", "never"):
            raise ValueError("fsync must be one of always, batch, never")
        if self.cache_written not in ("gateway", "all"):
            raise ValueError("cache_written must be gateway or all")
        if self.read_buffer_bytes < 1024 * 1024:
            raise ValueError("read_buffer_bytes must be at least 1 MiB (1048576)")
        if not 0.1 <= self.stall_timeout <= 600:
            raise ValueError("stall_timeout must be 0.1..600 seconds")
        if not 1 <= self.header_timeout <= 3600 or not 1 <= self.body_timeout <= 3600:
            raise ValueError("header_timeout and body_timeout must be 1..3600 seconds")
        if self.min_body_rate < 0 or self.max_uploads_per_client < 0:
            raise ValueError("min_body_rate and max_uploads_per_client must be 0 or more")
        if self.gc_scan_rate < 0:
            raise ValueError("gc_scan_rate must be 0 (unpaced) or more")
        if not 0 < self.port < 65536:
            raise ValueError("port must be 1..65535")
        if not 0 <= self.s3_port < 65536 or (self.s3_port and self.s3_port == self.port):
            raise ValueError("s3_port must be 0 (off) or 1..65535, not the node's own port")
        self.validate_security()
        r = self.replaces
        if r and not (r.isascii() and r.isalnum() and len(r) <= 64):
            raise ValueError("replaces must be a member id (letters and digits, as `p2pstore status` shows)")
        if not self.s3_region or not all(c.isalnum() or c == "-" for c in self.s3_region):
            raise ValueError("s3_region must be letters, digits and '-' (e.g. us-east-1)")
        if self.s3_upload_max_age < 1:
            raise ValueError("s3_upload_max_age must be at least 1 second")
        self.s3_domain = s3_domains(self.s3_domain)

    def validate_security(self) -> None:
        """TLS files come in complete sets; a clustered node without TLS says so explicitly."""
        node_tls = (self.cluster_ca, self.node_cert, self.node_key)
        if any(node_tls) and not all(node_tls):
            raise ValueError("mutual TLS needs all of cluster_ca, node_cert and node_key")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        if self.internal_tls and self.insecure_plain:
            raise ValueError("insecure_plain contradicts cluster_ca/node_cert/node_key: choose one")
        if self.cluster_secret and not self.internal_tls and not self.insecure_plain:
            raise ValueError(
                "node-to-node traffic needs TLS (cluster_ca, node_cert, node_key; make them with "
                "`p2pstore cluster certs`) or, to run it in plain HTTP, insecure_plain"
            )
        if self.internal_tls:
            port = self.internal_listen_port
            if not 0 < port < 65536 or port in (self.port, self.s3_port):
                raise ValueError("internal_port must be 1..65535 and differ from port and s3_port")


def s3_domains(raw: list[str] | str) -> list[str]:
    """S3 domains as configured (several values, or comma-separated) in the form Host headers are
    compared in: lower-case, no trailing dot; ValueError for one that is not a host name."""
    out: list[str] = []
    for item in [raw] if isinstance(raw, str) else raw:
        for part in str(item).split(","):
            domain = part.strip().lower().rstrip(".")
            if not domain:
                continue
            labels = domain.split(".")
            if any(not label or not all(c.isalnum() or c == "-" for c in label) for label in labels):
                raise ValueError(f"s3_domain {part.strip()!r} is not a host name (e.g. s3.example.com)")
            if domain not in out:
                out.append(domain)
    return out


def _coerce(kind: Any, raw: str) -> Any:
    if kind in (bool, "bool"):
        if raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if raw.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{raw!r} is not a boolean (true/false)")
    if kind in (int, "int"):
        return int(raw)
    if kind in (float, "float"):
        return float(raw)
    if kind in (Path, "Path"):
        return Path(raw)
    if kind in ("list[str]",):
        return [s.strip() for s in raw.split(",") if s.strip()]
    return raw


def from_env(overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> NodeConfig:
    """Build a config: defaults, then ``P2PSTORE_*`` variables, then explicit overrides.

    ``overrides`` holds values given on the command line; ``None`` values are ignored so that a
    flag left unset does not hide the environment.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in fields(NodeConfig):
        name = ENV_PREFIX + f.name.upper()
        if name in env:
            try:
                values[f.name] = _coerce(f.type, env[name])
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from exc
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    cfg = NodeConfig(**values)
    cfg.data_dir = Path(cfg.data_dir)
    cfg.validate()
    return cfg
