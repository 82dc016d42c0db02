"""S3 listings over the manifest's key order (p2pstore/s3/listing.py), bucket names, and the XML
bodies the S3 front end reads."""

from __future__ import annotations

import bisect

import pytest

from p2pstore.core.manifest import ManifestEntry
from p2pstore.s3 import xml as s3xml
from p2pstore.s3.errors import S3Error
from p2pstore.s3.listing import decode_token, encode_token, list_page
from p2pstore.s3.names import bucket_name_problem

SHA = "0" * 64


def fetcher(keys: list[str]):
    ordered = sorted(keys, key=lambda k: k.encode())  # SQLite's order: UTF-8 bytes
    calls = []

    def fetch(prefix: str, after: str, limit: int) -> list[ManifestEntry]:
        calls.append(after)
        start = bisect.bisect_right([k.encode() for k in ordered], after.encode())
        out = [k for k in ordered[start:] if k.startswith(prefix)][:limit]
        return [ManifestEntry(k, "0000000000000.000000.n", 1, SHA, (SHA,), "", False, 1.0) for k in out]

    return fetch, calls


def walk(fetch, bucket: str, prefix: str = "", delimiter: str = "", max_keys: int = 1000):
    """Every page, as a client follows them: (keys, prefixes) in order."""
    keys, prefixes, start = [], [], ""
    while True:
        page = list_page(fetch, bucket, prefix, delimiter, start, max_keys)
        keys += [k for k, _ in page.items]
        prefixes += page.prefixes
        if not page.truncated:
            return keys, prefixes
        start = decode_token(encode_token(page.last))


KEYS = ["b/a", "b/dir/1", "b/dir/2", "b/dir/sub/3", "b/é", "b/z", "b/ä/x", "b/~", "other/a", "b/dir2/x"]


@pytest.mark.parametrize("max_keys", [1, 2, 3, 1000])
def test_pages_cover_every_key_once_in_utf8_byte_order(max_keys: int) -> None:
    fetch, _ = fetcher(KEYS)
    keys, prefixes = walk(fetch, "b", max_keys=max_keys)
    assert prefixes == []
    expected = sorted((k[2:] for k in KEYS if k.startswith("b/")), key=lambda k: k.encode())
    assert keys == expected
    assert keys.index("~") < keys.index("ä/x") < keys.index("é")  # bytes, not code points of a locale


@pytest.mark.parametrize("max_keys", [1, 2, 1000])
def test_a_delimiter_rolls_keys_up_into_common_prefixes(max_keys: int) -> None:
    fetch, _ = fetcher(KEYS)
    keys, prefixes = walk(fetch, "b", delimiter="/", max_keys=max_keys)
    assert keys == ["a", "z", "~", "é"]
    assert prefixes == ["dir/", "dir2/", "ä/"]
    keys, prefixes = walk(fetch, "b", prefix="dir/", delimiter="/", max_keys=max_keys)
    assert keys == ["dir/1", "dir/2"] and prefixes == ["dir/sub/"]


def test_a_common_prefix_costs_one_more_fetch_not_one_per_key() -> None:
    fetch, calls = fetcher([f"b/big/{i:05d}" for i in range(5000)] + ["b/c"])
    page = list_page(fetch, "b", "", "/", "", 1000)
    assert page.prefixes == ["big/"] and [k for k, _ in page.items] == ["c"]
    assert len(calls) <= 3


def test_bad_continuation_token() -> None:
    with pytest.raises(S3Error) as info:
        decode_token("%%%")
    assert info.value.code == "InvalidArgument"


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 64,
        "Photos",
        "-ab",
        "ab-",
        "a..b",
        "192.168.1.1",
        ".p2pstore",
        "xn--abc",
        "a_b",
        "abc-s3alias",
    ],
)
def test_bucket_names_s3_refuses(name: str) -> None:
    assert bucket_name_problem(name) is not None


@pytest.mark.parametrize("name", ["abc", "photos", "my.bucket-1", "a" * 63, "1bucket"])
def test_bucket_names_s3_accepts(name: str) -> None:
    assert bucket_name_problem(name) is None


@pytest.mark.parametrize(
    "body",
    [
        b"<Delete><Object>",
        b"not xml",
        b"<Other/>",
        b"<Delete></Delete>",
        b'<!DOCTYPE d [<!ENTITY x "y">]><Delete><Object><Key>&x;</Key></Object></Delete>',
        b"<Delete><Object><Version>1</Version></Object></Delete>",
    ],
)
def test_malformed_delete_bodies(body: bytes) -> None:
    with pytest.raises(S3Error) as info:
        s3xml.parse_delete(body)
    assert info.value.code == "MalformedXML" and info.value.status == 400


def test_delete_body_and_location() -> None:
    body = (
        b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet>'
        b"<Object><Key>a &amp; b</Key></Object><Object><Key>c</Key></Object></Delete>"
    )
    assert s3xml.parse_delete(body) == (True, ["a & b", "c"])
    assert s3xml.parse_location(b"") is None
    config = (
        b"<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint>"
        b"</CreateBucketConfiguration>"
    )
    assert s3xml.parse_location(config) == "eu-west-1"
    assert b"<Code>NoSuchKey</Code>" in s3xml.error("NoSuchKey", "gone <", "/b/k", "RID", {})
