"""Virtual-host-style addressing: which Host names a bucket, and the --s3-domain setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pstore.config import from_env
from p2pstore.s3.vhost import bucket_from_host, host_name, split_target
from tests.support.processes import run_cli

DOMAINS = ("localhost", "s3.example.com", "example.com")


@pytest.mark.parametrize(
    ("host", "want"),
    [
        ("photos.localhost:7100", "photos"),
        ("PHOTOS.LocalHost:7100", "photos"),
        ("photos.localhost.", "photos"),
        ("my.dotted.bucket.localhost:80", "my.dotted.bucket"),
        ("a.s3.example.com", "a"),  # the longest domain wins
        ("a.b.example.com", "a.b"),
        ("localhost:7100", None),  # the bare domain is path style
        ("s3.example.com", None),
        ("127.0.0.1:7100", None),
        ("[::1]:7100", None),
        ("photos.otherhost:7100", None),
        ("evillocalhost:7100", None),
        ("", None),
        (None, None),
    ],
)
def test_bucket_from_host(host: str | None, want: str | None) -> None:
    assert bucket_from_host(host, DOMAINS) == want


def test_host_name_strips_port_and_case() -> None:
    assert host_name("Photos.Localhost:7100") == "photos.localhost"
    assert host_name("photos.localhost") == "photos.localhost"


def test_split_target_both_styles() -> None:
    assert split_target("/dir/a.txt", "photos.localhost:1", DOMAINS) == ("photos", "dir/a.txt")
    assert split_target("/", "photos.localhost:1", DOMAINS) == ("photos", "")
    assert split_target("/photos/dir/a.txt", "localhost:1", DOMAINS) == ("photos", "dir/a.txt")
    assert split_target("/photos/dir/a.txt", "photos.localhost:1", ()) == ("photos", "dir/a.txt")
    assert split_target("/", "127.0.0.1:1", DOMAINS) == ("", "")


def test_s3_domain_from_env_and_flags() -> None:
    env = {"P2PSTORE_S3_DOMAIN": "S3.Example.com., localhost"}
    assert from_env(env=env).s3_domain == ["s3.example.com", "localhost"]
    assert from_env({"s3_domain": ["a.test", "b.test,a.test"]}, env={}).s3_domain == ["a.test", "b.test"]
    assert from_env(env={}).s3_domain == []


@pytest.mark.parametrize("bad", ["exa mple.com", "a..b", "host:7100", "http://x"])
def test_bad_s3_domain_is_a_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="s3_domain"):
        from_env({"s3_domain": [bad]}, env={})


def test_node_start_refuses_a_bad_domain_in_one_line(tmp_path: Path) -> None:
    """The flag is repeatable: the second value is checked too; a clear line, no traceback."""
    proc = run_cli("node", "start", "--data-dir", str(tmp_path / "d"), "--s3-domain", "a.test",
                   "--s3-domain", "b c")  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode != 0 and "s3_domain 'b c' is not a host name" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()  # nothing started, nothing created
