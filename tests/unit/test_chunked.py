"""aws-chunked decoding of bodies from an independent encoder (in chunked_helpers.py):
signed and unsigned streams, with and without trailers, in seeded random splits; zero
copy, truncation and malformed framing; throughput.

AWS's worked examples and real boto3 bodies are in test_chunked_examples.py.
"""

from __future__ import annotations

import hashlib
import random
import time

import pytest

from frontend.chunked import AwsChunkedDecoder
from frontend.errors import S3Error
from frontend.sigv4 import AuthResult
from tests.unit.chunked_helpers import (
    AUTH,
    SIGNED,
    SIGNED_TRAILER,
    UNSIGNED_TRAILER,
    crc32_b64,
    decode_all,
    encode,
    random_chunks,
)

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

