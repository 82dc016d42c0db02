"""Virtual-host-style addressing: ``http://<bucket>.<domain>/<key>``.

With ``--s3-domain`` set, a request whose Host is ``<bucket>.<domain>`` names its bucket in the
host and its key in the whole path; every other Host (an IP, a bare domain, another name) is
path style. Both styles work on the same port at once, as on S3.
"""

from __future__ import annotations

from collections.abc import Sequence


def host_name(host: str | None) -> str:
    """The Host header without its port, lower-cased, without a trailing dot ("" for IPv6
    literals, which never name a bucket)."""
    if not host or host.startswith("["):
        return ""
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        host = name
    return host.strip().lower().rstrip(".")


def bucket_from_host(host: str | None, domains: Sequence[str]) -> str | None:
    """The bucket a virtual-host request names, or None for path style. The longest matching
    domain wins, so ``a.s3.example.com`` is bucket ``a`` with domains example.com and
    s3.example.com; everything before ``.<domain>`` is the bucket, dots included."""
    name = host_name(host)
    if not name or name in domains:  # a domain itself is the path-style endpoint
        return None
    for domain in sorted(domains, key=len, reverse=True):
        bucket = name.removesuffix("." + domain)
        if bucket != name and bucket:
            return bucket
    return None


def split_target(path: str, host: str | None, domains: Sequence[str]) -> tuple[str, str]:
    """(bucket, key) of a request: from the Host and the whole path in virtual-host style,
    else from the path's first segment and the rest."""
    bucket = bucket_from_host(host, domains) if domains else None
    if bucket is not None:
        return bucket, path.removeprefix("/")
    name, _, key = path.removeprefix("/").partition("/")
    return name, key
