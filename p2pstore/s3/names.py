"""S3 bucket names: the rules of the real service for new buckets (general purpose buckets).

3-63 characters of lowercase letters, digits, '.' and '-', beginning and ending with a
letter or digit, no '..', not shaped like an IPv4 address, none of S3's reserved prefixes and
suffixes. A bucket is a top-level folder of the native namespace, so these rules also keep
bucket names clear of the reserved ``.p2pstore/`` folder (no leading '.').
"""

from __future__ import annotations

import re

from .errors import S3Error

_SHAPE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a bucket name, or None when it can."""
    if not 3 <= len(name) <= 63:
        return "bucket names are 3 to 63 characters long"
    if not _SHAPE.fullmatch(name):
        return ("bucket names hold lowercase letters, digits, '.' and '-', and begin and end "
                "with a letter or digit")  # fmt: skip
    if ".." in name:
        return "bucket names have no two adjacent periods"
    if _IPV4.fullmatch(name):
        return "bucket names are not formatted as IP addresses"
    if name.startswith(RESERVED_PREFIXES) or name.endswith(RESERVED_SUFFIXES):
        return "the name uses a prefix or suffix S3 reserves"
    return None


def check_bucket_name(name: str) -> str:
    """``name`` if valid, else InvalidBucketName saying why."""
    problem = bucket_name_problem(name)
    if problem is not None:
        raise S3Error("InvalidBucketName", f"The specified bucket is not valid: {problem}", BucketName=name)
    return name


# ---- folder markers ----
FOLDER_MARKER = ".s3-folder"
"""A native key has no empty segment, so an S3 key ending in '/' (a folder marker, as the AWS
console, s3fs and rclone's --s3-directory-markers make) is stored as that key + this segment, and
listed back without it. S3 keys whose last segment is this name are refused, so the mapping is
one-to-one."""


def stored_key(key: str) -> str:
    """The key in the bucket's native folder for S3 key ``key``."""
    return key + FOLDER_MARKER if key.endswith("/") else key


def shown_key(key: str) -> str:
    """The S3 key of a key in the bucket's native folder (inverse of :func:`stored_key`)."""
    if key.endswith("/" + FOLDER_MARKER) or key == FOLDER_MARKER:
        return key[: -len(FOLDER_MARKER)]
    return key


def is_marker_name(key: str) -> bool:
    """Whether an S3 key names the marker segment itself (refused: it would alias a folder)."""
    return key.rsplit("/", 1)[-1] == FOLDER_MARKER
