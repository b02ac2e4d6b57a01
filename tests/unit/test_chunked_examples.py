"""aws-chunked decoding of bodies from two outside sources: AWS's documented worked
examples (signed chunks and a signed trailer, with the published signatures) and real
boto3 PutObject/UploadPart requests captured before sending
(STREAMING-UNSIGNED-PAYLOAD-TRAILER, what boto3 and the aws CLI send over HTTPS), each
fed in seeded random splits, checked with the S3 additional checksums they carry.
"""

from __future__ import annotations

import io
import random

import pytest
from botocore.httpchecksum import _CHECKSUM_CLS

from frontend.checksums import RequestedChecksum, new_checksum, requested_checksums
from frontend.chunked import AwsChunkedDecoder
from frontend.errors import S3Error
from frontend.sigv4 import AuthResult, verify_request
from tests.unit.chunked_helpers import (
    ACCESS_KEY,
    SECRET_KEY,
    SIGNED,
    SIGNED_TRAILER,
    UNSIGNED_TRAILER,
    crc32_b64,
    decode_all,
)
from tests.unit.sigv4_helpers import DOC_KEY, DOC_NOW, DOC_SECRET, boto_client, captured_call, split

# what this botocore can put in a trailer: CRC32/SHA1/SHA256, plus CRC32C/CRC64NVME with boto3[crt]
BOTOCORE_ALGORITHMS = [a.upper() for a in ("crc32", "crc32c", "sha1", "sha256", "crc64nvme") if a in _CHECKSUM_CLS]


# ---------------------------------------------------------------------------
# AWS's worked examples (sigv4-streaming, sigv4-streaming-trailers)
# ---------------------------------------------------------------------------

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


def capture_boto3(operation: str, **params):
    """The request a boto3 client sends over HTTPS for operation, and its raw body."""
    client, captured = boto_client("https://s3.cairn.test", ACCESS_KEY, SECRET_KEY)
    request = captured_call(client, captured, operation, **params)
    body = request.body
    body = body.read() if hasattr(body, "read") else body
    return request, split(request)[3], body


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
