"""What one benchmark run is asked to do: ``BenchOptions``, the single definition of its options.

Each field that a user can set carries its command-line flag in its metadata (name, help text
and, for a list given as text, how to parse it), and ``p2pstore bench`` builds its options from
those fields, so a new option is one new field. ``benchmarks/bench_http.py`` runs that command.
Standard library only: the CLI imports this module to build its command.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SIZES = {"4k": 4 * 1024, "1m": 1024 * 1024, "64m": 64 * 1024 * 1024}
DEFAULT_PHASES = "put-4k,get-4k,put-1m,get-1m,put-64m,get-64m"


class BenchError(Exception):
    """A bad option or a failed set-up: reported as one line, never a traceback."""


@dataclass(frozen=True)
class Flag:
    """How a BenchOptions field is given on the command line.

    ``name`` is the flag (``--`` and the field's name with dashes unless given). A field whose
    value is not what the flag's text means (a list given comma-separated) has ``parse``, which
    turns the text into the value, and ``text_default``, the default as the flag would write it
    (None: the field's own default when the flag is not given).
    """

    help: str
    name: str | None = None
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None
    text_default: str | None = None


def flag(help: str, **rest: Any) -> dict[str, Flag]:
    """A BenchOptions field's metadata naming its flag (``rest``: the other :class:`Flag` fields)."""
    return {"flag": Flag(help, **rest)}


def parse_phases(text: str) -> list[str]:
    """Split and check a phase list: each GET phase needs its PUT phase earlier."""
    phases = [p.strip() for p in text.split(",") if p.strip()]
    if not phases:
        raise BenchError("no phase given: use e.g. put-4k,get-4k")
    for i, name in enumerate(phases):
        op, _, size_name = name.partition("-")
        if op not in ("put", "get") or size_name not in SIZES:
            raise BenchError(f"unknown phase {name!r}: use (put|get)-(4k|1m|64m)")
        if op == "get" and f"put-{size_name}" not in phases[:i]:
            raise BenchError(f"phase {name} needs put-{size_name} before it")
    return phases


def parse_urls(text: str) -> list[str]:
    """Comma-separated node URLs; bare ``host:port`` gets ``http://``."""
    urls = []
    for part in text.split(","):
        part = part.strip().rstrip("/")
        if part:
            urls.append(part if "://" in part else "http://" + part)
    if not urls:
        raise BenchError("--url: no URL given")
    return urls


def parse_pids(text: str) -> list[int]:
    """Comma-separated process ids."""
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError as exc:
        raise BenchError(f"--pids: {exc}") from exc


@dataclass
class BenchOptions:
    """Everything one run needs, with the command-line flag of each option a user sets."""

    urls: list[str] = field(
        default_factory=list,
        metadata=flag(
            "Running nodes to measure, comma-separated (round-robin).", name="--url", parse=parse_urls
        ),
    )
    local: int | None = field(
        default=None, metadata=flag("Start N local nodes in a temp dir (default: 1).", metavar="N")
    )
    pids: list[int] = field(
        default_factory=list,
        metadata=flag("With --url: node pids (same order) for peak RSS.", parse=parse_pids),
    )
    token: str | None = field(default=None, metadata=flag("API token (Bearer)."))
    concurrency: int = field(default=16, metadata=flag("Concurrent requests."))
    phases: list[str] = field(
        default_factory=lambda: DEFAULT_PHASES.split(","),
        metadata=flag(
            "Comma-separated (put|get)-(4k|1m|64m); a get needs its put before.",
            parse=parse_phases,
            text_default=DEFAULT_PHASES,
        ),
    )
    count_4k: int = field(default=2000, metadata=flag("Objects in the 4k phases."))
    count_1m: int = field(default=200, metadata=flag("Objects in the 1m phases."))
    count_64m: int = field(default=8, metadata=flag("Objects in the 64m phases."))
    json: Path | None = field(default=None, metadata=flag("Append one JSON line per phase to this file."))
    fsync: str = field(
        default="always", metadata=flag("fsync mode of --local nodes: always, batch or never.")
    )
    replicas: int | None = field(default=None, metadata=flag("R of --local nodes (default min(3, N))."))
    write_quorum: int | None = field(default=None, metadata=flag("W of --local nodes (default min(2, R))."))
    # ?r= on every GET (1: one replica's copy, no quorum lookup)
    read_quorum: int | None = field(
        default=None, metadata=flag("Replicas each GET consults (?r=; default: the nodes' R-W+1).")
    )
    read_lease: float | None = field(
        default=None, metadata=flag("Read lease of --local nodes (s; 0 = quorum reads).")
    )
    cache_written: str | None = field(
        default=None, metadata=flag("--cache-written of --local nodes: gateway or all.")
    )
    data_dir: Path | None = field(
        default=None, metadata=flag("Parent dir of --local node data (default: temp).")
    )
    keep: bool = field(default=False, metadata=flag("Keep the --local data dir afterwards."))
    tls: bool = field(
        default=False, metadata=flag("--local nodes talk over mutual TLS (else signed plain HTTP).")
    )
    versioned: bool = field(
        default=False,
        metadata=flag("Turn versioning on for the bench/ folder first (docs/versions.md): a put phase "
                      "repeated for a size overwrites, and every overwritten version is kept."),
    )  # fmt: skip
    mem_1g: bool = field(
        default=False, metadata=flag("1 GiB up+down through one node; check its peak RSS < 150 MiB.")
    )
    api: str = field(
        default="native",
        metadata=flag("native (/files) or s3 (SigV4-signed PutObject/GetObject on the S3 port)."),
    )
    access_key: str | None = field(
        default=None, metadata=flag("--api s3 with --url: access key id (default: $AWS_ACCESS_KEY_ID).")
    )
    secret_key: str | None = field(
        default=None, metadata=flag("--api s3 with --url: secret (default: $AWS_SECRET_ACCESS_KEY).")
    )
    bucket: str = field(default="bench", metadata=flag("--api s3: the bucket (created when missing)."))
    region: str = field(default="us-east-1", metadata=flag("--api s3: the region requests are signed for."))

    def count(self, size_name: str) -> int:
        return int(getattr(self, f"count_{size_name}"))


def flags() -> list[tuple[dataclasses.Field[Any], Flag]]:
    """Every BenchOptions field a user sets, with its flag, in the order of the fields."""
    return [(f, f.metadata["flag"]) for f in dataclasses.fields(BenchOptions) if "flag" in f.metadata]


def flag_name(f: dataclasses.Field[Any], flag: Flag) -> str:
    return flag.name or "--" + f.name.replace("_", "-")


def check_options(opts: BenchOptions) -> BenchOptions:
    """Reject impossible combinations up front (before any node starts); default to one local node."""
    if opts.urls and opts.local:
        raise BenchError("give --url or --local, not both")
    if opts.local is not None and opts.local < 1:
        raise BenchError("--local must be at least 1")
    if not opts.urls and not opts.local:
        opts.local = 1
    if opts.pids and not opts.urls:
        raise BenchError("--pids goes with --url (local nodes are known)")
    if opts.concurrency < 1:
        raise BenchError("--concurrency must be at least 1")
    for size_name in SIZES:
        if opts.count(size_name) < 1:
            raise BenchError(f"--count-{size_name} must be at least 1")
    if opts.fsync not in ("always", "batch", "never"):
        raise BenchError(f"--fsync must be always, batch or never, not {opts.fsync!r}")
    if opts.replicas is not None and not 1 <= opts.replicas <= (opts.local or opts.replicas):
        raise BenchError("--replicas must be between 1 and the number of local nodes")
    if opts.write_quorum is not None and opts.write_quorum < 1:
        raise BenchError("--write-quorum must be at least 1")
    if opts.read_lease is not None and not (opts.read_lease == 0 or 0.5 <= opts.read_lease <= 60):
        raise BenchError("--read-lease must be 0 (off) or 0.5..60 seconds")
    if opts.cache_written not in (None, "gateway", "all"):
        raise BenchError("--cache-written must be gateway or all")
    if opts.read_quorum is not None and opts.read_quorum < 1:
        raise BenchError("--read-quorum must be at least 1")
    if opts.api not in ("native", "s3"):
        raise BenchError(f"--api must be native or s3, not {opts.api!r}")
    if opts.api == "s3" and opts.mem_1g:
        raise BenchError("--mem-1g measures the native API: leave out --api s3")
    parse_phases(",".join(opts.phases))
    return opts


def options_from_flags(values: Mapping[str, Any]) -> BenchOptions:
    """Checked BenchOptions from the flags' values by field name (text for a field with
    ``parse``; a flag not given is None there, or absent). Raises BenchError."""
    kwargs: dict[str, Any] = {}
    for f, flag in flags():
        value = values.get(f.name)
        if value is None:
            continue  # the field's default
        kwargs[f.name] = flag.parse(value) if flag.parse is not None else value
    return check_options(BenchOptions(**kwargs))
