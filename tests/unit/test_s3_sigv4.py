"""SigV4 as S3 checks it (p2pstore/s3/sigv4.py, chunked.py, payload.py): requests signed by
botocore verify, tampered ones do not; the streaming example of the AWS documentation
(known signatures) decodes; bad chunk signatures, truncated bodies and bad trailer checksums
raise before the stream ends."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum

from p2pstore.s3 import chunked, payload, sigv4
from p2pstore.s3.errors import S3Error

AK, SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
CREDS = Credentials(AK, SECRET)
REGION = "us-east-1"


def as_request(aws: AWSRequest, method: str | None = None) -> sigv4.Request:
    """What the server sees of a botocore request: raw target decoded, headers lower-cased."""
    url = urlsplit(aws.url)
    headers = {k.lower(): v for k, v in aws.headers.items()}
    headers["host"] = url.netloc
    query = parse_qsl(url.query, keep_blank_values=True)
    return sigv4.Request(method or aws.method, unquote(url.path), query, headers)


def signed(
    method: str = "PUT",
    url: str = "http://127.0.0.1:9000/b/k%20e%2By/%E2%82%AC?tagging&x-id=Put",
    body: bytes = b"hello",
    headers: dict | None = None,
) -> AWSRequest:
    req = AWSRequest(method=method, url=url, data=body, headers=headers or {"x-amz-meta-colour": "blue"})
    S3SigV4Auth(CREDS, "s3", REGION).add_auth(req)
    return req


def check(req: sigv4.Request, secret: str = SECRET, now: float | None = None) -> sigv4.Verified:
    parsed = sigv4.parse(req, time.time() if now is None else now, REGION)
    assert parsed is not None
    return sigv4.verify(parsed, req, secret)


def test_a_request_botocore_signed_verifies() -> None:
    req = as_request(signed())
    verified = check(req)
    assert verified.access_key == AK and verified.payload == hashlib.sha256(b"hello").hexdigest()


@pytest.mark.parametrize("path", ["/b/k", "/b/dir/k-1_2.~x", "/b/k e+y/€", "/b/%41", "/b//k", "", "/"])
@pytest.mark.parametrize("host", ["127.0.0.1:9", " 1.2.3.4:9 ", "a  b", "a\tb", "a\u00a0b", "a\u2028b", "é"])
def test_the_common_shape_takes_a_shortcut_to_the_same_canonical_request(path: str, host: str) -> None:
    """No query and the three usual signed headers: one format instead of the general steps, and
    the same text, whitespace to trim or fold and paths to encode included."""
    headers = {"host": host, "x-amz-content-sha256": sigv4.EMPTY_SHA256, "x-amz-date": "20240101T000000Z",
               "x-amz-meta-unsigned": "x"}  # fmt: skip
    names = sigv4.COMMON_SIGNED
    general = "\n".join(("GET", sigv4.uri_encode(path or "/", slash=False), "",
                         sigv4.canonical_headers(headers, names), ";".join(names),
                         sigv4.EMPTY_SHA256))  # fmt: skip
    req = sigv4.Request("GET", path, [], headers)
    assert sigv4.canonical_request(req, names, sigv4.EMPTY_SHA256, presigned=False) == general
    fewer = ("host", "x-amz-date")  # another shape: the general path, which signs only those
    other = sigv4.canonical_request(req, fewer, sigv4.EMPTY_SHA256, presigned=False)
    assert "x-amz-content-sha256:" not in other and "\nhost;x-amz-date\n" in other


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/b/key-1", "http://127.0.0.1:9/b/k%20e%2By/%E2%82%AC"])
def test_a_get_botocore_signed_has_the_common_shape_and_verifies(url: str) -> None:
    aws = AWSRequest(method="GET", url=url, data=b"", headers={})
    S3SigV4Auth(CREDS, "s3", REGION).add_auth(aws)
    req = as_request(aws)
    assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date," in req.headers["authorization"]
    assert check(req).access_key == AK
    tampered = sigv4.Request(req.method, req.path + "x", req.query, req.headers)
    with pytest.raises(S3Error) as info:
        check(tampered)
    assert info.value.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("key_size", [0, 1, 32, 63, 64, 65, 200])
def test_sign_is_hmac_sha256(key_size: int) -> None:
    """sign() builds HMAC-SHA256 from hashes with the key's pads absorbed (cached per key): the
    same as the standard library's HMAC, for keys shorter, as long as and longer than a block."""
    key = bytes(range(key_size))
    for text in ("", "AWS4-HMAC-SHA256\n20240101T000000Z\nscope\n" + "ab" * 32, "é" * 100):
        assert sigv4.sign(key, text) == hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def test_authorization_fields_in_any_order_verify() -> None:
    """The usual header (Signature last) is parsed through a cache of what precedes it; fields in
    another order take the general parse and verify too, and a tampered signature fails either way."""
    req = as_request(signed())
    auth = req.headers["authorization"]
    algorithm, _, rest = auth.partition(" ")
    fields = [f.strip() for f in rest.split(",")]
    for order in (fields, fields[::-1], [fields[2], fields[0], fields[1]]):
        headers = {**req.headers, "authorization": f"{algorithm} {', '.join(order)}"}
        assert check(sigv4.Request(req.method, req.path, req.query, headers)).access_key == AK
        bad = ", ".join(f[:-4] + "0000" if f.startswith("Signature=") else f for f in order)
        headers = {**req.headers, "authorization": f"{algorithm} {bad}"}
        with pytest.raises(S3Error) as info:
            check(sigv4.Request(req.method, req.path, req.query, headers))
        assert info.value.code == "SignatureDoesNotMatch"
    headers = {**req.headers, "authorization": f"{algorithm} {fields[0]}, {fields[1]}"}  # no Signature
    with pytest.raises(S3Error) as info:
        check(sigv4.Request(req.method, req.path, req.query, headers))
    assert info.value.code == "AuthorizationHeaderMalformed"


@pytest.mark.parametrize("tamper", ["method", "path", "query", "header", "secret", "signature"])
def test_a_tampered_request_does_not(tamper: str) -> None:
    req = as_request(signed())
    headers = dict(req.headers)
    if tamper == "method":
        req = sigv4.Request("POST", req.path, req.query, headers)
    elif tamper == "path":
        req = sigv4.Request(req.method, req.path + "x", req.query, headers)
    elif tamper == "query":
        req = sigv4.Request(req.method, req.path, [*req.query, ("acl", "")], headers)
    elif tamper == "header":
        headers["x-amz-meta-colour"] = "red"
        req = sigv4.Request(req.method, req.path, req.query, headers)
    elif tamper == "signature":
        headers["authorization"] = headers["authorization"][:-4] + "0000"
        req = sigv4.Request(req.method, req.path, req.query, headers)
    with pytest.raises(S3Error) as info:
        check(req, secret="wrong" + SECRET if tamper == "secret" else SECRET)
    assert info.value.code == "SignatureDoesNotMatch" and info.value.status == 403


def test_clock_skew_beyond_15_minutes_is_refused() -> None:
    req = as_request(signed())
    check(req, now=time.time() + 14 * 60)
    with pytest.raises(S3Error) as info:
        check(req, now=time.time() + 16 * 60)
    assert info.value.code == "RequestTimeTooSkewed"


def test_wrong_region_and_malformed_headers() -> None:
    req = signed()
    S3SigV4Auth(CREDS, "s3", "eu-west-1").add_auth(req)
    with pytest.raises(S3Error, match="expecting 'us-east-1'") as info:
        check(as_request(req))
    assert info.value.code == "AuthorizationHeaderMalformed"
    bad = dict(as_request(signed()).headers, authorization="AWS4-HMAC-SHA256 Credential=x")
    with pytest.raises(S3Error) as info:
        check(sigv4.Request("GET", "/", [], bad))
    assert info.value.code == "AuthorizationHeaderMalformed"
    v2 = dict(bad, authorization="AWS AKIA:abc")
    with pytest.raises(S3Error) as info:
        check(sigv4.Request("GET", "/", [], v2))
    assert info.value.code == "InvalidRequest"
    assert sigv4.parse(sigv4.Request("GET", "/", [], {"host": "h"}), time.time(), REGION) is None  # anonymous


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_presigned_urls_verify_until_they_expire(method: str) -> None:
    req = AWSRequest(method=method, url="http://127.0.0.1:9000/b/some%20key.txt", data=b"")
    S3SigV4QueryAuth(CREDS, "s3", REGION, expires=60).add_auth(req)
    server = as_request(req)
    server = sigv4.Request(method, server.path, server.query, {"host": "127.0.0.1:9000"})
    assert check(server).payload == sigv4.UNSIGNED
    with pytest.raises(S3Error) as info:
        check(server, now=time.time() + 120)
    assert info.value.code == "AccessDenied" and "expired" in info.value.message
    tampered = sigv4.Request(method, server.path + "2", server.query, server.headers)
    with pytest.raises(S3Error) as info:
        check(tampered)
    assert info.value.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("expires", ["0", "604801", "-5", "soon"])
def test_presigned_expiry_out_of_bounds(expires: str) -> None:
    req = AWSRequest(method="GET", url="http://127.0.0.1:9000/b/k", data=b"")
    S3SigV4QueryAuth(CREDS, "s3", REGION, expires=60).add_auth(req)
    server = as_request(req)
    query = [(k, expires if k == "X-Amz-Expires" else v) for k, v in server.query]
    with pytest.raises(S3Error) as info:
        check(sigv4.Request("GET", server.path, query, {"host": "127.0.0.1:9000"}))
    assert info.value.code == "AuthorizationQueryParametersError"


# ---- aws-chunked ----
EXAMPLE_DATE = "20130524T000000Z"
EXAMPLE_SCOPE = sigv4.Scope("20130524", REGION)
EXAMPLE_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
EXAMPLE_CHUNKS = [  # the AWS documentation's chunked PUT example: 65536 + 1024 bytes of 'a'
    (65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
    (1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
    (0, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"),
]


def example_request() -> sigv4.Request:
    return sigv4.Request(
        "PUT",
        "/examplebucket/chunkObject.txt",
        [],
        {
            "host": "s3.amazonaws.com",
            "x-amz-date": EXAMPLE_DATE,
            "x-amz-storage-class": "REDUCED_REDUNDANCY",
            "x-amz-content-sha256": sigv4.STREAMING_SIGNED,
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": "66560",
            "content-length": "66824",
            "authorization": f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders="
            "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
            f"x-amz-decoded-content-length;x-amz-storage-class,Signature={EXAMPLE_SEED}",
        },
    )


def example_body(signatures: list[str] | None = None) -> bytes:
    sigs = signatures or [s for _, s in EXAMPLE_CHUNKS]
    return b"".join(
        f"{size:x};chunk-signature={sig}\r\n".encode() + b"a" * size + b"\r\n"
        for (size, _), sig in zip(EXAMPLE_CHUNKS, sigs, strict=True)
    )


async def pieces(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


async def drain(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([p async for p in stream])


def example_decoder() -> chunked.AwsChunkedDecoder:
    verified = check(example_request(), now=1369353600.0)  # the example's own time
    assert verified.seed == EXAMPLE_SEED
    signer = chunked.ChunkSigner(verified.key, verified.amz_date, verified.scope, verified.seed)
    return chunked.AwsChunkedDecoder(signer, decoded_length=66560)


def test_the_aws_streaming_example_decodes_with_its_documented_signatures() -> None:
    out = asyncio.run(drain(chunked.decode(pieces(example_body()), example_decoder())))
    assert out == b"a" * 66560


@pytest.mark.parametrize("fault", ["chunk-signature", "data", "truncated", "no-final", "longer"])
def test_a_faulty_signed_body_raises_before_the_stream_ends(fault: str) -> None:
    body = example_body()
    if fault == "chunk-signature":
        body = example_body([EXAMPLE_CHUNKS[0][1], "0" * 64, EXAMPLE_CHUNKS[2][1]])
    elif fault == "data":
        body = body.replace(b"a" * 100, b"a" * 99 + b"b", 1)
    elif fault == "truncated":
        body = body[:40000]
    elif fault == "no-final":
        body = body[: body.index(b"0;chunk-signature")]
    elif fault == "longer":
        body = body + b"5\r\nhello\r\n"
    with pytest.raises(S3Error) as info:
        asyncio.run(drain(chunked.decode(pieces(body), example_decoder())))
    assert info.value.code in ("SignatureDoesNotMatch", "IncompleteBody", "InvalidRequest")
    expected = {
        "chunk-signature": "SignatureDoesNotMatch",
        "data": "SignatureDoesNotMatch",
        "truncated": "IncompleteBody",
        "no-final": "IncompleteBody",
    }
    if fault in expected:
        assert info.value.code == expected[fault]


def botocore_trailer_body(data: bytes) -> bytes:
    """The body boto3 sends with STREAMING-UNSIGNED-PAYLOAD-TRAILER (its own encoder)."""
    wrapper = AwsChunkedWrapper(io.BytesIO(data), Crc32Checksum, "x-amz-checksum-crc32", chunk_size=64 * 1024)
    return wrapper.read()


def trailer_stream(body: bytes, length: int) -> AsyncIterator[bytes]:
    decoder = chunked.AwsChunkedDecoder(None, trailers=True, decoded_length=length)
    check_ = payload._checksum_check({"x-amz-trailer": "x-amz-checksum-crc32"}, decoder)
    assert check_ is not None
    return payload.checked(chunked.decode(pieces(body, 4096), decoder), [check_[0]])


def test_an_unsigned_trailer_body_from_botocore_decodes_and_its_checksum_is_checked() -> None:
    data = bytes(range(256)) * 1000
    body = botocore_trailer_body(data)
    assert asyncio.run(drain(trailer_stream(body, len(data)))) == data
    bad = body[: body.rindex(b"x-amz-checksum-crc32:")] + b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    with pytest.raises(S3Error) as info:
        asyncio.run(drain(trailer_stream(bad, len(data))))
    assert info.value.code == "BadDigest"
    flipped = body.replace(bytes(range(10)), bytes(range(1, 11)), 1)
    with pytest.raises(S3Error) as info:
        asyncio.run(drain(trailer_stream(flipped, len(data))))
    assert info.value.code == "BadDigest"
    with pytest.raises(S3Error) as info:
        asyncio.run(drain(trailer_stream(body[: len(body) // 2], len(data))))
    assert info.value.code == "IncompleteBody"


def test_checksums_match_their_reference_values() -> None:
    from p2pstore.s3 import checksums

    for name, value in [("crc32", 0xCBF43926), ("crc32c", 0xE3069283), ("crc64nvme", 0xAE8B14860A799888)]:
        h = checksums.new(name)
        h.update(b"123456789")
        assert int.from_bytes(h.digest(), "big") == value, name
