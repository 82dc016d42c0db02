"""`p2pstore node ...`: run a node, restore a node's checkpoint.

Every NodeConfig field has a flag here; all flags default to None so that a flag left unset
does not hide the matching ``P2PSTORE_*`` environment variable.
"""

import inspect
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from .failures import EXIT_BAD_INPUT, CliError

app = typer.Typer(help="Run and maintain a storage node.", no_args_is_help=True, rich_markup_mode=None)


class Fsync(StrEnum):
    always = "always"
    batch = "batch"
    never = "never"


class CacheWritten(StrEnum):
    gateway = "gateway"
    all = "all"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(raw: str) -> int:
    """Accept 4194304, 4MiB, 4M, 512k (binary units), so sizes are easy to type."""
    m = _SIZE.match(str(raw))
    if not m:
        raise typer.BadParameter(f"{raw!r} is not a size (e.g. 4096, 4MiB, 1G)")
    number, unit = float(m.group(1)), m.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def parse_rate(raw: str) -> float:
    """A bytes-per-second rate; same units as sizes, '/s' optional."""
    return float(parse_size(str(raw).removesuffix("/s")))


def _seeds(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    return [s.strip() for s in raw.split(",") if s.strip()]


def _size_option(help: str) -> Any:
    return typer.Option(parser=parse_size, metavar="BYTES", show_default=False, help=help)


def _rate_option(help: str) -> Any:
    return typer.Option(parser=parse_rate, metavar="BYTES/S", show_default=False, help=help)


@app.command("start")
def start(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where chunks, metadata and checkpoints live.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    advertise: Annotated[
        str | None, typer.Option(help="host:port other nodes use to reach this one.")
    ] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Comma-separated host:port of nodes to join through.")
    ] = None,
    replaces: Annotated[
        str | None,
        typer.Option(help="Id of a dead member whose place this node (with an empty data dir) takes."),
    ] = None,
    cluster_secret: Annotated[
        str | None, typer.Option(help="Shared secret signing node-to-node requests when TLS is off.")
    ] = None,
    cluster_ca: Annotated[
        str | None, typer.Option(help="Cluster CA certificate (PEM): turns on mutual TLS between nodes.")
    ] = None,
    node_cert: Annotated[
        str | None, typer.Option(help="This node's certificate (PEM), signed by the CA.")
    ] = None,
    node_key: Annotated[str | None, typer.Option(help="This node's private key (PEM).")] = None,
    internal_port: Annotated[
        int | None, typer.Option(help="Port for mutual-TLS node-to-node traffic (default: port + 1000).")
    ] = None,
    insecure_plain: Annotated[
        bool | None,
        typer.Option("--insecure-plain", help="Node-to-node traffic in plain HTTP (signed, not encrypted).",
                     show_default=False),
    ] = None,
    tls_cert: Annotated[
        str | None, typer.Option(help="Certificate (PEM) for HTTPS on the public and S3 ports.")
    ] = None,
    tls_key: Annotated[str | None, typer.Option(help="Its private key (PEM).")] = None,
    api_token: Annotated[
        str | None, typer.Option(help="Require 'Authorization: Bearer <token>' on the API.")
    ] = None,
    chunk_size: Annotated[int | None, _size_option("Chunk size (e.g. 4MiB).")] = None,
    replicas: Annotated[int | None, typer.Option(help="Copies of each file (R).")] = None,
    write_quorum: Annotated[int | None, typer.Option(help="Replicas that must confirm a write (W).")] = None,
    gossip_interval: Annotated[float | None, typer.Option(help="Seconds per gossip round.")] = None,
    checkpoint_interval: Annotated[
        float | None, typer.Option(help="Seconds between automatic checkpoints; 0 disables.")
    ] = None,
    checkpoint_keep: Annotated[int | None, typer.Option(help="Checkpoints to keep on disk.")] = None,
    max_key_bytes: Annotated[int | None, typer.Option(help="Longest key accepted.")] = None,
    max_upload_bytes: Annotated[int | None, _size_option("Largest upload accepted; 0 = unlimited.")] = None,
    min_free_bytes: Annotated[
        int | None, _size_option("Refuse writes (507) below this much free disk.")
    ] = None,
    dead_after: Annotated[
        float | None, typer.Option(help="Seconds dead before a node's files are re-replicated.")
    ] = None,
    tombstone_grace: Annotated[
        float | None, typer.Option(help="Seconds to keep confirmed deletes before GC.")
    ] = None,
    repair_rate: Annotated[float | None, _rate_option("Re-sync bandwidth cap; 0 = unthrottled.")] = None,
    scrub_rate: Annotated[float | None, _rate_option("Bytes/s the corruption scrubber reads.")] = None,
    scrub_chunk_rate: Annotated[
        float | None, typer.Option(help="Chunks/s the scrubber checks at most; 0 = only --scrub-rate.")
    ] = None,
    gc_scan_rate: Annotated[
        float | None, typer.Option(help="Chunk names/s the orphan-chunk scan checks; 0 = unpaced.")
    ] = None,
    fsync: Annotated[Fsync | None, typer.Option(help="When to fsync writes.", show_default=False)] = None,
    read_lease: Annotated[
        float | None, typer.Option(help="Seconds a read lease runs (local reads); 0 = quorum reads.")
    ] = None,
    cache_written: Annotated[
        CacheWritten | None,
        typer.Option(help="Whose written chunk files stay in the page cache.", show_default=False),
    ] = None,
    read_buffer_bytes: Annotated[
        int | None, _size_option("Chunk buffers all reads through this node hold at once (read-ahead waits).")
    ] = None,
    stall_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds a replica may stall a write or a chunk transfer before it is dropped."),
    ] = None,
    header_timeout: Annotated[
        float | None, typer.Option(help="Seconds a client may take to send a request head.")
    ] = None,
    body_timeout: Annotated[
        float | None, typer.Option(help="Window (s) over which a request body must keep --min-body-rate.")
    ] = None,
    min_body_rate: Annotated[
        float | None, typer.Option(help="Bytes/s a request body must average per --body-timeout window.")
    ] = None,
    max_uploads_per_client: Annotated[
        int | None, typer.Option(help="Uploads in progress per client address (0 = no cap).")
    ] = None,
    s3_port: Annotated[
        int | None, typer.Option(help="Serve the S3 API on this port (0 or unset: off).")
    ] = None,
    s3_region: Annotated[
        str | None, typer.Option(help="The region S3 clients sign for (default us-east-1).")
    ] = None,
    s3_upload_max_age: Annotated[
        float | None,
        typer.Option(help="Seconds an idle multipart upload is kept before the leader removes it."),
    ] = None,
    s3_domain: Annotated[
        list[str] | None,
        typer.Option(help="Serve <bucket>.DOMAIN as virtual-host-style S3 URLs; repeat or comma-separate.",
                     metavar="DOMAIN", show_default=False),
    ] = None,
    lifecycle_clock_offset: Annotated[
        float | None,
        typer.Option(help="Seconds added to the time lifecycle rules see (tests; 0 in production)."),
    ] = None,
    log_level: Annotated[
        LogLevel | None,
        typer.Option(case_sensitive=False, help="Logging verbosity.", show_default=False),
    ] = None,
) -> None:
    """Run a storage node in the foreground until SIGTERM/SIGINT."""
    from p2pstore.config import from_env

    overrides: dict[str, Any] = {
        "data_dir": data_dir,
        "host": host,
        "port": port,
        "advertise": advertise,
        "seeds": _seeds(seeds),
        "replaces": replaces,
        "cluster_secret": cluster_secret,
        "cluster_ca": cluster_ca,
        "node_cert": node_cert,
        "node_key": node_key,
        "internal_port": internal_port,
        "insecure_plain": insecure_plain,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "api_token": api_token,
        "chunk_size": chunk_size,
        "replicas": replicas,
        "write_quorum": write_quorum,
        "gossip_interval": gossip_interval,
        "checkpoint_interval": checkpoint_interval,
        "checkpoint_keep": checkpoint_keep,
        "max_key_bytes": max_key_bytes,
        "max_upload_bytes": max_upload_bytes,
        "min_free_bytes": min_free_bytes,
        "dead_after": dead_after,
        "tombstone_grace": tombstone_grace,
        "repair_rate": repair_rate,
        "scrub_rate": scrub_rate,
        "scrub_chunk_rate": scrub_chunk_rate,
        "gc_scan_rate": gc_scan_rate,
        "fsync": fsync.value if fsync else None,
        "read_lease": read_lease,
        "cache_written": cache_written.value if cache_written else None,
        "read_buffer_bytes": read_buffer_bytes,
        "stall_timeout": stall_timeout,
        "header_timeout": header_timeout,
        "body_timeout": body_timeout,
        "min_body_rate": min_body_rate,
        "max_uploads_per_client": max_uploads_per_client,
        "s3_port": s3_port,
        "s3_region": s3_region,
        "s3_upload_max_age": s3_upload_max_age,
        "s3_domain": s3_domain or None,
        "lifecycle_clock_offset": lifecycle_clock_offset,
        "log_level": log_level.value if log_level else None,
    }
    try:
        cfg = from_env(overrides)
    except (ValueError, TypeError) as exc:
        raise CliError(f"invalid configuration: {exc}", EXIT_BAD_INPUT) from exc
    try:
        from p2pstore.server import run_node
    except ImportError as exc:
        raise CliError(f"node server is not available: {exc}") from exc
    from p2pstore.storage.lock import DataDirInUse

    try:
        run_node(cfg)
    except DataDirInUse as exc:
        raise CliError(f"{exc.message}; stop that node first, or use another --data-dir") from exc


def _show_config_defaults() -> None:
    """Put NodeConfig's defaults in `node start --help`: the flags default to None (so an unset
    flag leaves the environment variable in charge), which click would show as no default."""
    import dataclasses
    import typing

    from p2pstore.config import NodeConfig

    defaults = {f.name: f.default for f in dataclasses.fields(NodeConfig)}
    # Annotations are objects here (no `from __future__ import annotations` in this module), so
    # the OptionInfo changed is the one typer reads.
    for name, param in inspect.signature(start).parameters.items():
        value = defaults.get(name, dataclasses.MISSING)
        if value in (dataclasses.MISSING, None, "") or isinstance(value, bool):
            continue
        for meta in typing.get_args(param.annotation)[1:]:
            if isinstance(meta, typer.models.OptionInfo):
                meta.show_default = str(value)


_show_config_defaults()


@app.command("restore")
def restore(
    data_dir: Annotated[
        Path,
        typer.Option(
            envvar="P2PSTORE_DATA_DIR",
            file_okay=False,
            help="The (stopped) node's data directory.",
        ),
    ],
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", help="Checkpoint name (default: newest).")
    ] = None,
) -> None:
    """Replace a stopped node's metadata with a checkpoint (newest by default)."""
    import logging

    from p2pstore.errors import StoreError
    from p2pstore.storage.checkpoint import restore_checkpoint

    logging.getLogger("p2pstore").addHandler(logging.NullHandler())  # one line: ours, below
    from p2pstore.storage.lock import DataDirInUse, DataDirLock

    if not data_dir.is_dir():
        raise CliError(f"data directory not found: {data_dir}")
    try:
        lock = DataDirLock(data_dir).acquire()
    except DataDirInUse as exc:
        raise CliError(f"restore refused: {exc.message}; stop the node first") from exc
    try:
        name = restore_checkpoint(data_dir, checkpoint)
    except StoreError as exc:
        raise CliError(f"restore failed: {exc.message}") from exc
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(f"restore failed: {exc}") from exc
    finally:
        lock.release()
    typer.echo(f"restored checkpoint {name} into {data_dir}")


def register(root: typer.Typer) -> None:
    """Attach `node` as a sub-app of the root app."""
    root.add_typer(app, name="node")
