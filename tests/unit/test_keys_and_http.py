"""Key validation and HTTP header helpers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.api.http import etag_matches, parse_range
from p2pstore.core.keys import InvalidKey, validate_key
from p2pstore.errors import RangeNotSatisfiable


@pytest.mark.parametrize("key", ["a", "a/b/c.txt", "ünïcode/文件", "x" * 1024, "a.b", "...", ".a/b."])
def test_good_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/a",
        "a/",
        "a//b",
        ".",
        "..",
        "a/../b",
        "a/./b",
        "a\x00b",
        "a\nb",
        "a\\b",
        "x" * 1025,
        "é" * 513,
        "a\x7fb",
    ],
)
def test_bad_keys(key: str) -> None:
    with pytest.raises(InvalidKey):
        validate_key(key)


@given(st.text(max_size=300))
def test_validate_key_never_crashes(key: str) -> None:
    try:
        assert validate_key(key) == key
    except InvalidKey as exc:
        assert exc.message.startswith("invalid key")


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-0", 10, (0, 1)),
        ("bytes=2-4", 10, (2, 5)),
        ("bytes=5-", 10, (5, 10)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=-30", 10, (0, 10)),
        ("bytes=8-100", 10, (8, 10)),
        ("bytes=4-2", 10, None),
        ("bytes=0-1,3-4", 10, None),
        ("items=0-1", 10, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=10-", 10), ("bytes=-0", 10), ("bytes=0-", 0)])
def test_unsatisfiable_range(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


def test_etag_matches() -> None:
    sha = "ab" * 32
    assert etag_matches(f'"{sha}"', sha)
    assert etag_matches(f'W/"{sha}", "x"', sha)
    assert etag_matches("*", sha)
    assert not etag_matches('"other"', sha)
    assert not etag_matches(None, sha)
