"""aws-chunked decoding and the S3 additional checksums.

Bodies come from three sources: AWS's documented worked examples (signed chunks and a
signed trailer, with the published signatures), real boto3 PutObject/UploadPart requests
captured before sending (STREAMING-UNSIGNED-PAYLOAD-TRAILER, what boto3 and the aws CLI
send over HTTPS), and a straightforward independent encoder in this file for the signed
variants. Each is fed in seeded random splits.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import io
import random
import time
import zlib

import boto3
import pytest
from botocore.auth import _host_from_url
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.httpchecksum import _CHECKSUM_CLS, Crc32Checksum, Sha1Checksum, Sha256Checksum

from frontend.checksums import (
    ALGORITHMS,
    RequestedChecksum,
    check_value,
    crc64nvme,
    new_checksum,
    requested_checksums,
)
from frontend.chunked import AwsChunkedDecoder
from frontend.errors import S3Error
from frontend.sigv4 import AuthResult, derive_signing_key, verify_request

# what this botocore can put in a trailer: CRC32/SHA1/SHA256, plus CRC32C/CRC64NVME with boto3[crt]
BOTOCORE_ALGORITHMS = [a.upper() for a in ("crc32", "crc32c", "sha1", "sha256", "crc64nvme") if a in _CHECKSUM_CLS]

UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

ACCESS_KEY = "AKIDCAIRNTEST"
SECRET_KEY = "chunky/secret+key"

AUTH = AuthResult(
    access_key=ACCESS_KEY,
    signing_key=derive_signing_key(SECRET_KEY, "20261125", "us-east-1"),
    seed_signature="4d" * 32,
    amz_date="20261125T101500Z",
    scope="20261125/us-east-1/s3/aws4_request",
    content_sha256=SIGNED,
)


# ---------------------------------------------------------------------------
# an independent, straightforward encoder
# ---------------------------------------------------------------------------


def _sig(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def encode(
    chunks: list[bytes],
    variant: str,
    auth: AuthResult | None = AUTH,
    trailers: list[tuple[str, str]] = (),
    sign_trailers: bool = True,
) -> bytes:
    """Frame chunks (an empty final chunk is added) as a client would."""
    out = bytearray()
    previous = auth.seed_signature if auth else ""
    for data in [*chunks, b""]:
        if variant == UNSIGNED_TRAILER:
            out += b"%x\r\n" % len(data)
        else:
            sts = "\n".join(
                [
                    "AWS4-HMAC-SHA256-PAYLOAD",
                    auth.amz_date,
                    auth.scope,
                    previous,
                    EMPTY_SHA256,
                    hashlib.sha256(data).hexdigest(),
                ]
            )
            previous = _sig(auth.signing_key, sts)
            out += b"%x;chunk-signature=%s\r\n" % (len(data), previous.encode())
        if data:
            out += data + b"\r\n"
    for name, value in trailers:
        out += f"{name}:{value}\r\n".encode()
    if variant == SIGNED_TRAILER and sign_trailers:
        canonical = "".join(f"{n}:{v}\n" for n, v in sorted(trailers))
        sts = "\n".join(
            [
                "AWS4-HMAC-SHA256-TRAILER",
                auth.amz_date,
                auth.scope,
                previous,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        out += f"x-amz-trailer-signature:{_sig(auth.signing_key, sts)}\r\n".encode()
    out += b"\r\n"
    return bytes(out)


def decode_all(decoder: AwsChunkedDecoder, body: bytes, rng: random.Random | None = None, max_piece: int = 64):
    """Feed body in random pieces (or whole); return (payload, trailers)."""
    out = bytearray()
    if rng is None:
        pieces = [body]
    else:
        pieces = []
        pos = 0
        while pos < len(body):
            n = rng.randint(1, max_piece)
            pieces.append(body[pos : pos + n])
            pos += n
    for i, piece in enumerate(pieces):
        kind = i % 3
        data = piece if kind == 0 else bytearray(piece) if kind == 1 else memoryview(piece)
        for part in decoder.feed(data):
            out += part
    return bytes(out), decoder.finish()


def random_chunks(rng: random.Random, count: int, max_size: int) -> list[bytes]:
    return [rng.randbytes(rng.randint(1, max_size)) for _ in range(count)]


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


# ---------------------------------------------------------------------------
# AWS's worked examples (sigv4-streaming, sigv4-streaming-trailers)
# ---------------------------------------------------------------------------

DOC_KEY = "AKIAIOSFODNN7EXAMPLE"
DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_NOW = calendar.timegm((2013, 5, 24, 0, 0, 0))
DOC_CASES = {
    SIGNED: (
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
        "x-amz-storage-class",
        "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
        [
            "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
            "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
            "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
        ],
        b"",
    ),
    SIGNED_TRAILER: (
        "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class;"
        "x-amz-trailer",
        "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e",
        [
            "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
            "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
            "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
        ],
        b"x-amz-checksum-crc32c:sOO8/Q==\r\n"
        b"x-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n",
    ),
}


def doc_request(variant: str, chunk_signatures: list[str] | None = None, trailer: bytes | None = None):
    signed_headers, seed, signatures, doc_trailer = DOC_CASES[variant]
    signatures = chunk_signatures or signatures
    trailer = doc_trailer if trailer is None else trailer
    body = (
        b"10000;chunk-signature=%s\r\n" % signatures[0].encode()
        + b"a" * 65536
        + b"\r\n400;chunk-signature=%s\r\n" % signatures[1].encode()
        + b"a" * 1024
        + b"\r\n0;chunk-signature=%s\r\n" % signatures[2].encode()
        + trailer
        + b"\r\n"
    )
    headers = [
        ("Content-Encoding", "aws-chunked"),
        ("Host", "s3.amazonaws.com"),
        ("x-amz-content-sha256", variant),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-decoded-content-length", "66560"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        (
            "Authorization",
            f"AWS4-HMAC-SHA256 Credential={DOC_KEY}/20130524/us-east-1/s3/aws4_request, "
            f"SignedHeaders={signed_headers}, Signature={seed}",
        ),
        ("Content-Length", str(len(body))),
    ]
    if variant == SIGNED_TRAILER:
        headers.append(("x-amz-trailer", "x-amz-checksum-crc32c"))
    auth = verify_request(
        "PUT", b"/examplebucket/chunkObject.txt", b"", headers, {DOC_KEY: DOC_SECRET}.get, now=DOC_NOW
    )
    return auth, body


@pytest.mark.parametrize("variant", [SIGNED, SIGNED_TRAILER])
def test_documented_examples_decode(variant: str):
    auth, body = doc_request(variant)
    assert auth is not None and auth.content_sha256 == variant
    if variant == SIGNED:
        assert len(body) == 66824  # the documented Content-Length
    rng = random.Random(1)
    for max_piece in (1 << 20, 4096, 97):
        decoder = AwsChunkedDecoder(variant, auth)
        payload, trailers = decode_all(decoder, body, rng, max_piece)
        assert payload == b"a" * 66560 and decoder.decoded_bytes == 66560
        assert trailers == ({"x-amz-checksum-crc32c": "sOO8/Q=="} if variant == SIGNED_TRAILER else {})
    # the documented trailer value is the CRC32C of the payload
    checksum = new_checksum("crc32c")
    checksum.update(b"a" * 66560)
    if variant == SIGNED_TRAILER:
        assert checksum.b64digest() == "sOO8/Q=="


@pytest.mark.parametrize("variant", [SIGNED, SIGNED_TRAILER])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_documented_examples_with_a_bad_chunk_signature(variant: str, which: int):
    signatures = list(DOC_CASES[variant][2])
    signatures[which] = signatures[which][:-1] + ("0" if signatures[which][-1] != "0" else "1")
    auth, body = doc_request(variant, signatures)
    decoder = AwsChunkedDecoder(variant, auth)
    with pytest.raises(S3Error) as info:
        decode_all(decoder, body)
    assert info.value.code == "SignatureDoesNotMatch"
    with pytest.raises(S3Error):  # the decoder stays failed
        decoder.feed(b"0\r\n")


def test_documented_trailer_example_with_tampered_trailer():
    good = DOC_CASES[SIGNED_TRAILER][3]
    for trailer in (
        good.replace(b"sOO8/Q==", b"sOO8/Q=A"),
        good.replace(b"d81f82fc", b"d81f82fd"),
        b"x-amz-checksum-crc32c:sOO8/Q==\r\n",  # signature stripped
        good.replace(b"x-amz-checksum-crc32c", b"x-amz-checksum-crc32"),
    ):
        auth, body = doc_request(SIGNED_TRAILER, trailer=trailer)
        with pytest.raises(S3Error) as info:
            decode_all(AwsChunkedDecoder(SIGNED_TRAILER, auth), body)
        assert info.value.code == "SignatureDoesNotMatch"


def test_documented_example_with_wrong_seed_fails_on_the_first_chunk():
    auth, body = doc_request(SIGNED)
    other = AuthResult(auth.access_key, auth.signing_key, "0" * 64, auth.amz_date, auth.scope, auth.content_sha256)
    decoder = AwsChunkedDecoder(SIGNED, other)
    with pytest.raises(S3Error) as info:
        decoder.feed(body[: 100 + 65536])
    assert info.value.code == "SignatureDoesNotMatch"


# ---------------------------------------------------------------------------
# real boto3 requests
# ---------------------------------------------------------------------------


class _EmptyRaw:
    def stream(self, **kwargs):
        yield b""


def capture_boto3(operation: str, **params):
    """The request a boto3 client sends over HTTPS for operation, and its raw body."""
    captured = []

    def before_send(request, **kwargs):
        captured.append(request)
        return AWSResponse(request.url, 200, {}, _EmptyRaw())

    client = boto3.client(
        "s3",
        endpoint_url="https://s3.cairn.test",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    client.meta.events.register("before-send.s3", before_send)
    try:
        getattr(client, operation)(**params)
    except Exception:  # the fake response may not parse
        pass
    (request,) = captured
    body = request.body
    body = body.read() if hasattr(body, "read") else body
    headers = [(n, v.decode("latin-1") if isinstance(v, bytes) else v) for n, v in request.headers.items()]
    if not any(name.lower() == "host" for name, _ in headers):
        headers.append(("Host", _host_from_url(request.url)))  # what the HTTP client adds
    return request, headers, body


@pytest.mark.parametrize("algorithm", [None, *BOTOCORE_ALGORITHMS])
@pytest.mark.parametrize("size", [0, 1, 5000, 1024 * 1024, 2 * 1024 * 1024 + 12345])
def test_boto3_put_object_bodies_decode(algorithm: str | None, size: int):
    payload = random.Random(size).randbytes(size)
    params = {"Bucket": "bkt", "Key": "a b/c", "Body": io.BytesIO(payload)}
    if algorithm:
        params["ChecksumAlgorithm"] = algorithm
    request, headers, body = capture_boto3("put_object", **params)
    header_map = {n.lower(): v for n, v in headers}
    assert header_map["x-amz-content-sha256"] == UNSIGNED_TRAILER
    assert header_map["content-encoding"] == "aws-chunked"
    path = request.url.split("s3.cairn.test", 1)[1].encode()
    auth = verify_request(request.method, path, b"", headers, {ACCESS_KEY: SECRET_KEY}.get)
    assert auth is not None and auth.content_sha256 == UNSIGNED_TRAILER

    requested = requested_checksums(headers)
    expected_algorithm = (algorithm or "CRC32").lower()
    assert requested == RequestedChecksum(expected_algorithm, "trailer")
    assert requested.header_name == header_map["x-amz-trailer"]

    rng = random.Random(size + 7)
    for max_piece in (1, 977, 1 << 20) if size <= 5000 else (65536, 1 << 20):
        decoder = AwsChunkedDecoder(header_map["x-amz-content-sha256"], auth)
        checksum = requested.new()
        decoded, trailers = decode_all(decoder, body, rng, max_piece)
        checksum.update(decoded)
        assert decoded == payload
        assert decoder.decoded_bytes == int(header_map["x-amz-decoded-content-length"]) == size
        assert set(trailers) == {requested.header_name}
        requested.verify(checksum, trailers[requested.header_name])
        tampered = requested.new()
        tampered.update(payload + b"!")
        with pytest.raises(S3Error) as info:
            requested.verify(tampered, trailers[requested.header_name])
        assert info.value.code == "BadDigest"


def test_boto3_upload_part_body_decodes():
    payload = random.Random(5).randbytes(3 * 1024 * 1024)
    request, headers, body = capture_boto3(
        "upload_part", Bucket="b", Key="k", UploadId="id", PartNumber=2, Body=io.BytesIO(payload)
    )
    assert body.count(b"\r\n") >= 4  # several 1 MiB chunks
    decoder = AwsChunkedDecoder(UNSIGNED_TRAILER, None)
    decoded, trailers = decode_all(decoder, body, random.Random(3), 300_000)
    assert decoded == payload
    assert trailers == {"x-amz-checksum-crc32": crc32_b64(payload)}


# ---------------------------------------------------------------------------
# the independent encoder, random splits
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [UNSIGNED_TRAILER, SIGNED, SIGNED_TRAILER])
@pytest.mark.parametrize("seed", range(6))
def test_random_bodies_in_random_splits(variant: str, seed: int):
    rng = random.Random(seed)
    chunks = random_chunks(rng, rng.randint(0, 6), 3000)
    payload = b"".join(chunks)
    trailers = [] if variant == SIGNED else [("x-amz-checksum-crc32", crc32_b64(payload))]
    if variant != SIGNED and seed % 2:
        trailers.append(("x-amz-meta-extra", "v a l"))
    body = encode(chunks, variant, trailers=trailers)
    for max_piece in (1, 7, 200, 1 << 20):
        decoder = AwsChunkedDecoder(variant, AUTH if variant != UNSIGNED_TRAILER else None)
        decoded, got = decode_all(decoder, body, rng, max_piece)
        assert decoded == payload
        assert got == dict(trailers)
        assert decoder.decoded_bytes == len(payload)


def test_pieces_are_zero_copy_and_passed_through_immediately():
    data = bytes(range(256)) * 4096  # 1 MiB
    body = encode([data], UNSIGNED_TRAILER)
    decoder = AwsChunkedDecoder(UNSIGNED_TRAILER, None)
    header_len = body.index(b"\r\n") + 2
    assert decoder.feed(body[:header_len]) == []
    piece = body[header_len : header_len + 1000]
    (out,) = decoder.feed(piece)
    assert isinstance(out, memoryview) and out.obj is piece and bytes(out) == data[:1000]
    assert decoder.decoded_bytes == 1000
    rest = memoryview(body)[header_len + 1000 :]
    out = decoder.feed(rest)
    assert b"".join(out) == data[1000:]
    assert decoder.finish() == {}


def test_signed_chunk_data_is_hashed_as_it_passes():
    chunks = [b"x" * 100_000, b"y" * 10]
    body = encode(chunks, SIGNED)
    decoder = AwsChunkedDecoder(SIGNED, AUTH)
    first_header = body.index(b"\r\n") + 2
    out = decoder.feed(body[: first_header + 50_000])
    assert sum(len(p) for p in out) == 50_000  # returned before the chunk (and its signature) ends


@pytest.mark.parametrize("variant", [SIGNED, SIGNED_TRAILER])
def test_corrupted_data_or_signature_is_detected(variant: str):
    rng = random.Random(42)
    chunks = random_chunks(rng, 3, 500)
    trailers = [("x-amz-checksum-crc32", crc32_b64(b"".join(chunks)))] if variant == SIGNED_TRAILER else []
    body = encode(chunks, variant, trailers=trailers)
    signatures = [i for i in range(len(body)) if body.startswith(b"chunk-signature=", i)]
    # flip a data byte of each chunk, and a hex digit of each chunk signature
    positions = [body.index(b"\r\n", s) + 2 for s in signatures[:-1]] + [s + 20 for s in signatures]
    if variant == SIGNED_TRAILER:
        positions.append(body.index(b"x-amz-trailer-signature:") + 30)
        positions.append(body.index(b"x-amz-checksum-crc32:") + 22)
    for pos in positions:
        bad = bytearray(body)
        bad[pos] = ord("0") if bad[pos] != ord("0") else ord("1")
        decoder = AwsChunkedDecoder(variant, AUTH)
        with pytest.raises(S3Error) as info:
            decode_all(decoder, bytes(bad), random.Random(pos), 50)
        assert info.value.code == "SignatureDoesNotMatch", pos


def test_signed_variant_needs_signatures_and_auth():
    body = encode([b"abc"], UNSIGNED_TRAILER)  # no chunk-signature extensions
    with pytest.raises(S3Error) as info:
        decode_all(AwsChunkedDecoder(SIGNED, AUTH), body)
    assert info.value.code == "InvalidRequest"
    with pytest.raises(S3Error) as info:
        AwsChunkedDecoder(SIGNED, None)
    assert info.value.code == "InvalidRequest"
    with pytest.raises(S3Error) as info:
        AwsChunkedDecoder("UNSIGNED-PAYLOAD", None)
    assert info.value.code == "InvalidRequest"
    # unsigned trailers on a signed-trailer stream are refused
    body = encode([b"abc"], SIGNED_TRAILER, trailers=[("x-amz-checksum-crc32", crc32_b64(b"abc"))], sign_trailers=False)
    with pytest.raises(S3Error) as info:
        decode_all(AwsChunkedDecoder(SIGNED_TRAILER, AUTH), body)
    assert info.value.code == "SignatureDoesNotMatch"
    # no trailers at all is fine
    assert decode_all(
        AwsChunkedDecoder(SIGNED_TRAILER, AUTH), encode([b"abc"], SIGNED_TRAILER, sign_trailers=False)
    ) == (
        b"abc",
        {},
    )


def test_trailers_are_refused_without_a_trailer_variant():
    body = encode([b"abc"], SIGNED)[:-2] + b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    with pytest.raises(S3Error) as info:
        decode_all(AwsChunkedDecoder(SIGNED, AUTH), body)
    assert info.value.code == "InvalidRequest"


@pytest.mark.parametrize("variant", [UNSIGNED_TRAILER, SIGNED, SIGNED_TRAILER])
def test_truncated_streams(variant: str):
    chunks = [b"hello", b"aws-chunked", b"!"]
    trailers = [] if variant == SIGNED else [("x-amz-checksum-crc32", crc32_b64(b"".join(chunks)))]
    body = encode(chunks, variant, trailers=trailers)
    # the stream may end without the final CRLF once the last chunk (and any signed trailers) arrived
    final_header_end = body.rindex(b";chunk-signature=" if variant != UNSIGNED_TRAILER else b"\r\n0\r\n")
    final_header_end = body.index(b"\r\n", final_header_end + 2) + 2
    tolerated = {len(body), len(body) - 2}
    if variant != SIGNED_TRAILER:
        tolerated.add(final_header_end)  # an unsigned stream cannot tell a trailer from no trailer
    else:
        tolerated.add(final_header_end)  # no trailers at all: nothing unsigned is accepted
    for cut in range(len(body)):
        decoder = AwsChunkedDecoder(variant, AUTH if variant != UNSIGNED_TRAILER else None)
        decoded = b"".join(bytes(p) for p in decoder.feed(body[:cut]))
        assert b"".join(chunks).startswith(decoded)
        if cut in tolerated:
            decoder.finish()
            continue
        with pytest.raises(S3Error) as info:
            decoder.finish()
        assert info.value.code in ("IncompleteBody", "SignatureDoesNotMatch"), cut
        if info.value.code == "SignatureDoesNotMatch":
            assert variant == SIGNED_TRAILER and cut > final_header_end  # trailers without their signature


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"zz\r\nab\r\n0\r\n\r\n", "InvalidRequest"),  # not hex
        (b"0x2\r\nab\r\n0\r\n\r\n", "InvalidRequest"),
        (b"+2\r\nab\r\n0\r\n\r\n", "InvalidRequest"),
        (b" 2\r\nab\r\n0\r\n\r\n", "InvalidRequest"),
        (b"\r\nab\r\n0\r\n\r\n", "InvalidRequest"),  # empty size
        (b"2\nab\r\n0\r\n\r\n", "InvalidRequest"),  # bare LF
        (b"2\r\nabc\r\n0\r\n\r\n", "IncompleteBody"),  # more data than the size
        (b"4\r\nab\r\n0\r\n\r\n", "IncompleteBody"),  # less data than the size
        (b"2\r\nab\r\n0\r\n\r\nextra", "InvalidRequest"),  # data after the end
        (b"2\r\nab\r\n0\r\n\r\n\r\n", "InvalidRequest"),
        (b"2\r\nab\r\n0\r\nno-colon\r\n\r\n", "InvalidRequest"),
        (b"2\r\nab\r\n0\r\n:value\r\n\r\n", "InvalidRequest"),
        (b"2\r\nab\r\n0\r\na:1\r\na:2\r\n\r\n", "InvalidRequest"),  # duplicate trailer
        (b"%x\r\n" % (17 * 1024 * 1024), "InvalidRequest"),  # chunk larger than max_chunk
        (b"1" * 5000 + b"\r\n", "InvalidRequest"),  # size line too long
        (b"2;" + b"e" * 5000 + b"\r\nab\r\n0\r\n\r\n", "InvalidRequest"),
        (b"2\r\nab\r\n0\r\nx-amz-checksum-crc32:" + b"A" * 5000 + b"\r\n\r\n", "InvalidRequest"),
    ],
)
def test_malformed_framing(body: bytes, code: str):
    for max_piece in (None, 1, 3):
        decoder = AwsChunkedDecoder(UNSIGNED_TRAILER, None)
        with pytest.raises(S3Error) as info:
            decode_all(decoder, body, random.Random(0) if max_piece else None, max_piece or 1)
        assert info.value.code == code, (body[:40], max_piece)


def test_long_lines_are_refused_before_being_buffered():
    decoder = AwsChunkedDecoder(UNSIGNED_TRAILER, None)
    decoder.feed(b"1" * 4000)
    with pytest.raises(S3Error) as info:
        decoder.feed(b"1" * 100)
    assert info.value.code == "InvalidRequest"
    # a 4 KiB line is still acceptable (a chunk extension we ignore on unsigned streams)
    decoder = AwsChunkedDecoder(UNSIGNED_TRAILER, None)
    line = b"3;" + b"x" * (4096 - 2) + b"\r\n"
    assert b"".join(decoder.feed(line + b"abc\r\n0\r\n\r\n")) == b"abc"


def test_max_chunk_is_configurable():
    decoder = AwsChunkedDecoder(UNSIGNED_TRAILER, None, max_chunk=10)
    assert b"".join(decoder.feed(b"a\r\n0123456789\r\n")) == b"0123456789"
    with pytest.raises(S3Error):
        decoder.feed(b"b\r\n")


def test_unsigned_streams_ignore_chunk_extensions_and_a_stray_trailer_signature():
    body = b"3;chunk-signature=" + b"0" * 64 + b"\r\nabc\r\n0\r\nx-amz-checksum-crc32:NSRBwg==\r\n"
    body += b"x-amz-trailer-signature:" + b"0" * 64 + b"\r\n\r\n"
    assert decode_all(AwsChunkedDecoder(UNSIGNED_TRAILER, None), body) == (b"abc", {"x-amz-checksum-crc32": "NSRBwg=="})


def test_finish_twice_and_feed_after_finish():
    decoder = AwsChunkedDecoder(UNSIGNED_TRAILER, None)
    decoder.feed(b"0\r\n\r\n")
    assert decoder.finish() == {}
    assert decoder.finish() == {}
    with pytest.raises(S3Error):
        decoder.feed(b"x")


# ---------------------------------------------------------------------------
# throughput
# ---------------------------------------------------------------------------


def _body(variant: str, auth: AuthResult | None, total_mib: int) -> bytes:
    chunk = bytes(range(256)) * 4096  # 1 MiB, botocore's chunk size
    return encode([chunk] * total_mib, variant, auth)


def _throughput(variant: str, auth: AuthResult | None, body: bytes, step: int = 1 << 20) -> float:
    """Decode body fed in step-sized pieces; payload bytes per second."""
    view = memoryview(body)
    decoder = AwsChunkedDecoder(variant, auth)
    start = time.perf_counter()
    count = 0
    for pos in range(0, len(body), step):
        for piece in decoder.feed(view[pos : pos + step]):
            count += len(piece)
    decoder.finish()
    elapsed = time.perf_counter() - start
    assert count == decoder.decoded_bytes
    return count / elapsed


def test_unsigned_decoder_throughput():
    body = _body(UNSIGNED_TRAILER, None, 64)
    rate = max(_throughput(UNSIGNED_TRAILER, None, body) for _ in range(3))
    small = max(_throughput(UNSIGNED_TRAILER, None, body, 64 * 1024) for _ in range(3))
    print(f"unsigned aws-chunked: {rate / 1e9:.1f} GB/s in 1 MiB feeds, {small / 1e9:.1f} GB/s in 64 KiB feeds")
    assert rate > 1e9 and small > 1e9


def test_signed_decoder_throughput():
    rate = _throughput(SIGNED, AUTH, _body(SIGNED, AUTH, 32))
    sha = hashlib.sha256()
    data = bytes(1 << 20)
    start = time.perf_counter()
    for _ in range(32):
        sha.update(data)
    sha_rate = 32 * (1 << 20) / (time.perf_counter() - start)
    print(f"signed aws-chunked: {rate / 1e6:.0f} MB/s (sha256 alone: {sha_rate / 1e6:.0f} MB/s)")
    assert rate > 0.5 * sha_rate  # bounded by SHA-256, not by the framing


# ---------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------


def _checksum_int(algorithm: str, data: bytes) -> int:
    checksum = new_checksum(algorithm)
    checksum.update(data)
    return int.from_bytes(checksum.digest(), "big")


def _crc64nvme_bitwise(data: bytes) -> int:
    """Reference: reflected CRC-64 with polynomial 0x9a6c9329ac4bc9b5, init/xorout all ones."""
    crc = (1 << 64) - 1
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x9A6C9329AC4BC9B5 if crc & 1 else 0)
    return crc ^ ((1 << 64) - 1)


@pytest.mark.parametrize(
    ("algorithm", "data", "expected"),
    [
        ("crc32", b"hello world", 0x0D4A1185),
        ("crc32", b"123456789", 0xCBF43926),
        ("crc32c", b"123456789", 0xE3069283),
        ("crc32c", bytes(32), 0x8A9136AA),
        ("sha1", b"hello world", 0x2AAE6C35C94FCFB415DBE95F408B9CE91EE846ED),
        ("sha256", b"hello world", 0xB94D27B9934D3E08A52E52D7DA7DABFAC484EFE37A5380EE9088F7ACE2EFCDE9),
        # the awscrt / aws-checksums test vectors
        ("crc64nvme", b"123456789", 0xAE8B14860A799888),
        ("crc64nvme", b"", 0),
        ("crc64nvme", bytes(32), 0xCF3473434D4ECF3B),
        ("crc64nvme", b"\xff" * 32, 0xA0A06974C34D63C4),
        ("crc64nvme", bytes(range(32)), 0xB9D9D4A8492CBD7F),
        ("crc64nvme", bytes(1024), 0x691BB2B09BE5498A),
        ("crc64nvme", b"hello world!", 0xD9160D1FA8E418E3),
    ],
)
def test_checksum_vectors(algorithm: str, data: bytes, expected: int):
    assert _checksum_int(algorithm, data) == expected
    # the same in pieces, and through copy()
    checksum = new_checksum(algorithm.upper())
    for i in range(0, len(data), 5):
        checksum.update(memoryview(data)[i : i + 5])
    snapshot = checksum.copy()
    checksum.update(b"more")
    assert int.from_bytes(snapshot.digest(), "big") == expected
    assert snapshot.b64digest() == base64.b64encode(snapshot.digest()).decode()
    if algorithm == "crc64nvme":
        assert crc64nvme(data) == expected


@pytest.mark.parametrize(
    ("algorithm", "botocore_cls"), [("crc32", Crc32Checksum), ("sha1", Sha1Checksum), ("sha256", Sha256Checksum)]
)
def test_b64digest_matches_botocore(algorithm: str, botocore_cls):
    data = random.Random(9).randbytes(100_000)
    ours = new_checksum(algorithm)
    ours.update(data)
    theirs = botocore_cls()
    theirs.update(data)
    assert ours.b64digest() == theirs.b64digest()


def test_crc64nvme_fast_path_matches_the_bitwise_reference():
    rng = random.Random(64)
    for size in [*range(0, 40), 511, 512, 513, 1000, 4096, 9999]:
        data = rng.randbytes(size)
        assert crc64nvme(data) == _crc64nvme_bitwise(data), size
    # incremental updates mixing the table path and the big-integer path
    data = rng.randbytes(60_000)
    expected = _crc64nvme_bitwise(data)
    checksum = new_checksum("crc64nvme")
    pos = 0
    while pos < len(data):
        n = rng.choice([1, 3, 100, 511, 512, 700, 5000, 20_000])
        checksum.update(data[pos : pos + n])
        pos += n
    assert int.from_bytes(checksum.digest(), "big") == expected
    assert crc64nvme(bytearray(data)) == expected


def test_crc64nvme_large_input():
    data = random.Random(1).randbytes(4 << 20)
    one_shot = crc64nvme(data)
    checksum = new_checksum("crc64nvme")
    for i in range(0, len(data), 1 << 20):
        checksum.update(data[i : i + (1 << 20)])
    assert int.from_bytes(checksum.digest(), "big") == one_shot
    # CRC linearity against the reference on a prefix small enough for the bitwise loop
    assert crc64nvme(data[:20000]) == _crc64nvme_bitwise(data[:20000])


def test_unknown_algorithm():
    with pytest.raises(S3Error) as info:
        new_checksum("md5")
    assert info.value.code == "InvalidRequest"
    assert set(ALGORITHMS) == {"crc32", "crc32c", "sha1", "sha256", "crc64nvme"}


def test_requested_checksums():
    crc = crc32_b64(b"x")
    assert requested_checksums([("Host", "h")]) is None
    assert requested_checksums({"X-Amz-Checksum-CRC32": crc}) == RequestedChecksum("crc32", "header", crc)
    assert requested_checksums([("x-amz-trailer", "x-amz-checksum-sha256")]) == RequestedChecksum("sha256", "trailer")
    assert requested_checksums([("x-amz-sdk-checksum-algorithm", "CRC64NVME")]) == RequestedChecksum(
        "crc64nvme", "none"
    )
    both = [("x-amz-sdk-checksum-algorithm", "CRC32"), ("x-amz-checksum-crc32", crc)]
    assert requested_checksums(both) == RequestedChecksum("crc32", "header", crc)
    # x-amz-checksum-mode / -type / -algorithm carry no value
    assert requested_checksums([("x-amz-checksum-mode", "ENABLED"), ("x-amz-checksum-type", "FULL_OBJECT")]) is None
    for bad in (
        [("x-amz-checksum-crc32", crc), ("x-amz-checksum-sha1", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")],
        [("x-amz-checksum-crc32", crc), ("x-amz-trailer", "x-amz-checksum-crc32c")],
        [("x-amz-checksum-md5", "AAAA")],
        [("x-amz-checksum-crc32", "not base64!")],
        [("x-amz-checksum-crc32", "AAAAAAAA")],  # 6 bytes, not 4
        [("x-amz-trailer", "x-amz-meta-foo")],
        [("x-amz-sdk-checksum-algorithm", "MD5")],
        [("x-amz-sdk-checksum-algorithm", "SHA1"), ("x-amz-checksum-crc32", crc)],
    ):
        with pytest.raises(S3Error) as info:
            requested_checksums(bad)
        assert info.value.code == "InvalidRequest", bad


def test_requested_checksum_verify():
    data = b"some object data"
    checksum = new_checksum("crc32c")
    checksum.update(data)
    RequestedChecksum("crc32c", "header", checksum.b64digest()).verify(checksum)
    wrong = RequestedChecksum("crc32c", "header", base64.b64encode(b"\0\0\0\0").decode())
    with pytest.raises(S3Error) as info:
        wrong.verify(checksum)
    assert info.value.code == "BadDigest" and "CRC32C" in info.value.message
    trailer = RequestedChecksum("crc32c", "trailer")
    trailer.verify(checksum, checksum.b64digest())
    with pytest.raises(S3Error) as info:
        trailer.verify(checksum)  # announced, never sent
    assert info.value.code == "InvalidRequest"
    RequestedChecksum("crc32c", "none").verify(checksum)
    assert check_value("sha1", base64.b64encode(bytes(20)).decode()) == bytes(20)


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "crc64nvme"])
def test_crcs_match_awscrt(algorithm: str):
    checksums = pytest.importorskip("awscrt.checksums")
    rng = random.Random(11)
    for size in (0, 1, 9, 511, 512, 4097, 100_000, 1 << 20):
        data = rng.randbytes(size)
        assert _checksum_int(algorithm, data) == getattr(checksums, algorithm)(data), size


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "crc64nvme"])
def test_crc_combine_equals_crc_of_concatenation(algorithm):
    import random

    from frontend.checksums import combine_b64, new_checksum

    rng = random.Random(7)
    parts = [rng.randbytes(n) for n in (0, 1, 5, 4096, 70_001, 3)]
    values = []
    for part in parts:
        c = new_checksum(algorithm)
        c.update(part)
        values.append((c.b64digest(), len(part)))
    whole = new_checksum(algorithm)
    whole.update(b"".join(parts))
    assert combine_b64(algorithm, values) == whole.b64digest()
