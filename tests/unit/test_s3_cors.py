"""Bucket CORS rules: PutBucketCors bodies accepted and refused, S3's matching of origins,
methods and request headers (one wildcard each), and the headers of an answer."""

from __future__ import annotations

import pytest

from p2pstore.s3 import cors
from p2pstore.s3.errors import S3Error

ANY_GET = "<AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod>"


def config(*rules: str) -> bytes:
    body = "".join(f"<CORSRule>{r}</CORSRule>" for r in rules)
    return f'<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{body}</CORSConfiguration>'.encode()


def test_parse_and_write_back() -> None:
    rules = cors.parse(config(
        "<ID>web</ID><AllowedOrigin>https://*.example.com</AllowedOrigin><AllowedMethod>GET</AllowedMethod>"
        "<AllowedMethod>PUT</AllowedMethod><AllowedHeader>*</AllowedHeader><ExposeHeader>ETag</ExposeHeader>"
        "<MaxAgeSeconds>300</MaxAgeSeconds>",
        "<AllowedOrigin>*</AllowedOrigin><AllowedMethod>HEAD</AllowedMethod>",
    ))  # fmt: skip
    assert rules[0] == cors.Rule(("https://*.example.com",), ("GET", "PUT"), ("*",), ("ETag",), 300, "web")
    assert cors.parse(cors.document(rules)) == rules
    assert cors.rules_from_record([r.record() for r in rules]) == rules


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"<CORSConfiguration></CORSConfiguration>", "MalformedXML"),
        (b"<Other/>", "MalformedXML"),
        (b"<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin></CORSRule></CORSConfiguration>",
         "MalformedXML"),
        (config("<AllowedOrigin>*</AllowedOrigin><AllowedMethod>PATCH</AllowedMethod>"), "InvalidRequest"),
        (config("<AllowedOrigin>*.*</AllowedOrigin><AllowedMethod>GET</AllowedMethod>"), "InvalidRequest"),
        (config(ANY_GET + "<Bogus/>"), "MalformedXML"),
        (config("<AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod>"
                "<MaxAgeSeconds>-1</MaxAgeSeconds>"), "MalformedXML"),
        (config(*[ANY_GET] * 101), "MalformedXML"),
        (b"<CORSConfiguration", "MalformedXML"),
    ],
)  # fmt: skip
def test_bad_configurations_are_refused(body: bytes, code: str) -> None:
    with pytest.raises(S3Error) as info:
        cors.parse(body)
    assert info.value.code == code


def test_matching() -> None:
    site = cors.Rule(("https://*.example.com",), ("GET", "PUT"), ("x-amz-meta-*", "Content-Type"))
    anyone = cors.Rule(("*",), ("GET",))
    rules = (site, anyone)
    assert cors.find(rules, "https://app.example.com", "PUT", ["content-type", "x-amz-meta-a"]) is site
    assert cors.find(rules, "https://app.example.com", "PUT", ["x-other"]) is None
    assert cors.find(rules, "https://example.org", "GET") is anyone
    assert cors.find(rules, "https://example.org", "PUT") is None
    assert cors.find(rules, "http://app.example.com", "GET") is anyone  # scheme differs: not the site rule
    assert cors.wildcard_match("a*a", "a") is False and cors.wildcard_match("a*a", "aa") is True


def test_answer_headers() -> None:
    rule = cors.Rule(("https://a.test",), ("GET", "PUT"), ("*",), ("ETag",), 60)
    headers = cors.response_headers(rule, "https://a.test", ["Content-Type", " x-amz-date"])
    assert headers["Access-Control-Allow-Origin"] == "https://a.test"
    assert headers["Access-Control-Allow-Methods"] == "GET, PUT"
    assert headers["Access-Control-Expose-Headers"] == "ETag" and headers["Access-Control-Max-Age"] == "60"
    assert headers["Access-Control-Allow-Headers"] == "content-type, x-amz-date"
    assert "Origin" in headers["Vary"]
    star = cors.response_headers(cors.Rule(("*",), ("GET",)), "https://b.test")
    assert star["Access-Control-Allow-Origin"] == "*" and "Access-Control-Allow-Credentials" not in star
