"""An S3 key's native name: plain keys take a one-scan short cut; every other key takes the key
rules and the folder-marker rules, and the short cut never accepts what they refuse."""

from __future__ import annotations

import pytest

from p2pstore.core.keys import InvalidKey, validate_key
from p2pstore.s3.errors import S3Error
from p2pstore.s3.names import FOLDER_MARKER, is_marker_name, stored_key
from p2pstore.s3.objects import native_name

KEYS = ["k", "obj-00012", "a/b/c.txt", "x.y~z_1", "a.b/c..d", "-", "~/x", ".hidden", "a/.b", "dir/",
        "a//b", "a/./b", "a/../b", "..", ".", "/lead", "é/ü", "sp ace", "tab\there", "nul\x00",
        "back\\slash", FOLDER_MARKER, f"d/{FOLDER_MARKER}", "a" * 1019, "a" * 1020]  # fmt: skip


def reference(bucket: str, key: str, max_bytes: int) -> str | None:
    """What the general rules give: the native name, or None when they refuse the key."""
    if is_marker_name(key):
        return None
    try:
        return validate_key(f"{bucket}/{stored_key(key)}", max_bytes)
    except InvalidKey:
        return None


@pytest.mark.parametrize("key", KEYS)
def test_the_short_cut_agrees_with_the_rules(key: str) -> None:
    expected = reference("bkt", key, 1024)
    if expected is None:
        with pytest.raises(S3Error) as info:
            native_name("bkt", key, 1024)
        assert info.value.code in ("InvalidArgument", "KeyTooLongError")
    else:
        assert native_name("bkt", key, 1024) == expected


def test_length_counts_the_bucket_and_utf8_bytes() -> None:
    assert native_name("bkt", "a" * 1020, 1024) == "bkt/" + "a" * 1020
    with pytest.raises(S3Error) as info:
        native_name("bkt", "a" * 1021, 1024)
    assert info.value.code == "KeyTooLongError"
    with pytest.raises(S3Error) as info:
        native_name("bkt", "é" * 511, 1024)  # 1,022 bytes, 511 characters
    assert info.value.code == "KeyTooLongError"
