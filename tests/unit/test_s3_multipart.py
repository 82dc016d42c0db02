"""Multipart uploads' pure rules: part numbers, the Complete document and its checks against the
stored parts (S3's error codes), the multipart ETag, copy-source ranges, and the names of an
upload's entries."""

from __future__ import annotations

import hashlib

import pytest

from p2pstore.s3.errors import S3Error
from p2pstore.s3.parts import (
    MIN_PART,
    StoredPart,
    check_parts,
    multipart_etag,
    parse_complete,
    parse_copy_range,
    part_key,
    part_number,
    part_number_of,
    record_key,
    valid_upload_id,
)

UID = "0123456789abcdef0123456789abcdef"


def code(fn, *args) -> str:
    with pytest.raises(S3Error) as info:
        fn(*args)
    return info.value.code


def test_part_numbers_are_one_to_ten_thousand() -> None:
    assert part_number("1") == 1 and part_number("10000") == 10000
    for bad in (None, "", "0", "10001", "-1", "x", "1.5"):
        assert code(part_number, bad) == "InvalidArgument"


def test_entry_names_of_an_upload() -> None:
    assert record_key("bkt", UID) == f".p2pstore/s3/uploads/bkt/{UID}/upload"
    assert part_key("bkt", UID, 7) == f".p2pstore/s3/uploads/bkt/{UID}/part-00007"
    assert part_number_of(part_key("bkt", UID, 7)) == 7 and part_number_of(record_key("bkt", UID)) is None
    assert valid_upload_id(UID) and not valid_upload_id("../x") and not valid_upload_id(UID.upper())


def test_the_multipart_etag_is_the_md5_of_the_binary_md5s() -> None:
    parts = [b"a" * 10, b"b" * 20]
    md5s = [hashlib.md5(p).hexdigest() for p in parts]
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    assert multipart_etag(md5s) == f"{hashlib.md5(joined).hexdigest()}-2"


def complete_body(parts: list[tuple[int, str]]) -> bytes:
    items = "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>&quot;{e}&quot;</ETag></Part>" for n, e in parts
    )
    return f'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{items}</CompleteMultipartUpload>'.encode()


def test_the_complete_document() -> None:
    assert parse_complete(complete_body([(1, "aa"), (2, "bb")])) == [(1, "aa"), (2, "bb")]
    for bad in (
        b"",
        b"<CompleteMultipartUpload/>",
        b"<Other><Part><PartNumber>1</PartNumber><ETag>x</ETag></Part></Other>",
        b"<CompleteMultipartUpload><Part><PartNumber>one</PartNumber><ETag>x</ETag></Part></CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>",
        b'<!DOCTYPE x [<!ENTITY a "b">]><CompleteMultipartUpload/>',
        b"<CompleteMultipartUpload><Part>",
    ):
        assert code(parse_complete, bad) == "MalformedXML", bad


def test_complete_checks_order_parts_and_sizes() -> None:
    stored = {
        1: StoredPart(1, "aa", MIN_PART),
        2: StoredPart(2, "bb", MIN_PART - 1),
        3: StoredPart(3, "cc", 1),
    }
    assert [p.number for p in check_parts([(1, "aa"), (3, "cc")], stored)] == [1, 3]
    assert [p.number for p in check_parts([(2, "bb")], stored)] == [2]  # the last part may be small
    assert code(check_parts, [(3, "cc"), (1, "aa")], stored) == "InvalidPartOrder"
    assert code(check_parts, [(1, "aa"), (1, "aa")], stored) == "InvalidPartOrder"
    assert code(check_parts, [(1, "aa"), (4, "dd")], stored) == "InvalidPart"
    assert code(check_parts, [(1, "zz")], stored) == "InvalidPart"
    assert code(check_parts, [(2, "bb"), (3, "cc")], stored) == "EntityTooSmall"


def test_copy_source_ranges() -> None:
    assert parse_copy_range(None, 100) == (0, 100)
    assert parse_copy_range("bytes=0-9", 100) == (0, 10)
    assert parse_copy_range("bytes=90-99", 100) == (90, 100)
    for bad in ("0-9", "bytes=5", "bytes=-5", "bytes=a-b"):
        assert code(parse_copy_range, bad, 100) == "InvalidArgument"
    assert code(parse_copy_range, "bytes=90-100", 100) == "InvalidRange"
    assert code(parse_copy_range, "bytes=9-5", 100) == "InvalidRange"


def test_part_sizes_round_trip_compactly() -> None:
    from p2pstore.s3.parts import PARTS_META_MAX, decode_sizes, encode_sizes, part_span

    sizes = [5 * 1024**2] * 9_999 + [17]
    text = encode_sizes(sizes)
    assert text == "5242880*9999,17"
    runs = decode_sizes(text)
    assert runs is not None
    assert part_span(runs, 1) == (0, 5 * 1024**2)
    assert part_span(runs, 10_000) == (9_999 * 5 * 1024**2, 9_999 * 5 * 1024**2 + 17)
    assert part_span(runs, 10_001) is None
    uneven = [7, 7, 3, 9, 9, 9, 0]
    back = decode_sizes(encode_sizes(uneven) or "")
    assert back is not None
    spans = [part_span(back, n) for n in range(1, 8)]
    offsets = [sum(uneven[:i]) for i in range(7)]
    assert spans == [(o, o + n) for o, n in zip(offsets, uneven, strict=True)]
    assert encode_sizes([5 * 1024**2 + i for i in range(10_000)]) is None  # too many distinct sizes
    assert len(encode_sizes([5 * 1024**2 + i % 400 for i in range(400)]) or "") <= PARTS_META_MAX
    for bad in ("", "x", "5*", "5*0", "-1", "5**2", "5*10001", "1,,2"):
        assert decode_sizes(bad) is None, bad


def test_part_sizes_are_left_out_when_the_metadata_is_near_its_limit() -> None:
    from p2pstore.s3.multipart import fits

    sizes = ",".join(str(5 * 1024**2 + i) for i in range(400))  # ~3.6 KB of runs
    assert fits({"md5": "0" * 34, "s3-parts": sizes})
    near = {f"x-amz-meta-{i}": "v" * 100 for i in range(48)}  # ~5.4 KB of metadata
    assert fits(near) and not fits({**near, "s3-parts": sizes})
