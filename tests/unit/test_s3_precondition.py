"""GetObject's and CopyObject's conditional headers (RFC 9110's order), including the usual
request that sends none, which skips working out the ETag and dates."""

from __future__ import annotations

from p2pstore.core.manifest import ManifestEntry
from p2pstore.s3.objects import precondition

MD5 = "0123456789abcdef0123456789abcdef"
ENTRY = ManifestEntry("b/k", "0000000000001.000000.n", 1, "a" * 64, ("a" * 64,), "x", False,
                      1_000_000.0, meta=(("md5", MD5),))  # fmt: skip
LATER = "Tue, 13 Jan 1970 00:00:00 GMT"  # after the entry's time (12 Jan 1970, 13:46:40)
EARLIER = "Thu, 01 Jan 1970 00:00:00 GMT"


def test_no_condition_goes_on() -> None:
    assert precondition({}, ENTRY) is None
    assert precondition({"If-Match": f'"{MD5}"'}, ENTRY, "x-amz-copy-source-") is None


def test_if_match_and_if_none_match() -> None:
    assert precondition({"If-Match": f'"{MD5}"'}, ENTRY) is None
    assert precondition({"If-Match": '"other"'}, ENTRY) == 412
    assert precondition({"If-Match": "*"}, ENTRY) is None
    assert precondition({"If-None-Match": f'W/"{MD5}"'}, ENTRY) == 304
    assert precondition({"If-None-Match": '"other"'}, ENTRY) is None
    assert precondition({"x-amz-copy-source-If-Match": '"other"'}, ENTRY, "x-amz-copy-source-") == 412


def test_dates() -> None:
    assert precondition({"If-Modified-Since": LATER}, ENTRY) == 304
    assert precondition({"If-Modified-Since": EARLIER}, ENTRY) is None
    assert precondition({"If-Unmodified-Since": EARLIER}, ENTRY) == 412
    assert precondition({"If-Unmodified-Since": LATER}, ENTRY) is None
    # If-Match wins over If-Unmodified-Since, If-None-Match over If-Modified-Since
    assert precondition({"If-Match": f'"{MD5}"', "If-Unmodified-Since": EARLIER}, ENTRY) is None
    assert precondition({"If-None-Match": '"other"', "If-Modified-Since": LATER}, ENTRY) is None
