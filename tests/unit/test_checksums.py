"""Tests of frontend.checksums: the S3 additional checksums, CRC combination (FULL_OBJECT
multipart checksums) and the strict x-amz-checksum-* request parser that uploads use
(``UploadBody._checksum_request``)."""

from __future__ import annotations

import base64
import hashlib
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import Headers

from frontend import checksums
from frontend.checksums import (
    ALGORITHMS,
    COMBINABLE,
    DIGEST_SIZES,
    combine_b64,
    crc64nvme,
    crc_combine,
    new_checksum,
    requested_checksums,
)
from frontend.errors import S3Error
from frontend.upload import UploadBody

CHECK = b"123456789"

# (digest of b"123456789", digest of b""), big-endian hex as S3 sends them (base64 of these bytes)
VECTORS = {
    "crc32": ("cbf43926", "00000000"),
    "crc32c": ("e3069283", "00000000"),
    "crc64nvme": ("ae8b14860a799888", "0000000000000000"),
    "sha1": ("f7c3bc1d808e04732adf679965ccc34ca7ae3441", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
    "sha256": ("15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225",
               "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
}


def digest(algorithm: str, *pieces: bytes | bytearray | memoryview) -> bytes:
    c = new_checksum(algorithm)
    for piece in pieces:
        c.update(piece)
    return c.digest()


def crc_int(algorithm: str, data: bytes) -> int:
    return int.from_bytes(digest(algorithm, data), "big")


def crc64nvme_bitwise(data: bytes) -> int:
    """CRC-64/NVME bit at a time from its definition (reflected 0x9a6c9329ac4bc9b5,
    init and xorout all ones): independent of both awscrt and any table."""
    crc = (1 << 64) - 1
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x9A6C9329AC4BC9B5 if crc & 1 else crc >> 1
    return crc ^ ((1 << 64) - 1)


# ---------------------------------------------------------------------- known vectors


def test_every_algorithm_has_vectors() -> None:
    assert set(VECTORS) == set(ALGORITHMS)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_check_value_and_empty_input(algorithm: str) -> None:
    check, empty = VECTORS[algorithm]
    assert digest(algorithm, CHECK).hex() == check
    assert digest(algorithm).hex() == empty
    assert digest(algorithm, b"").hex() == empty
    c = new_checksum(algorithm)
    c.update(CHECK)
    assert c.b64digest() == base64.b64encode(bytes.fromhex(check)).decode()
    assert c.hexdigest() == check
    assert len(c.digest()) == DIGEST_SIZES[algorithm]
    assert c.algorithm == algorithm


def test_crc64nvme_check_value_as_int() -> None:
    assert crc64nvme(CHECK) == 0xAE8B14860A799888
    assert crc64nvme(b"") == 0


@pytest.mark.parametrize("size", [1, 7, 8, 9, 511, 512, 4096, 5121, 70_001])
def test_crc64nvme_matches_the_bitwise_definition(size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert crc64nvme(data) == crc64nvme_bitwise(data)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_algorithm_names_are_case_insensitive(algorithm: str) -> None:
    assert digest(algorithm.upper(), CHECK) == digest(algorithm, CHECK)


def test_unknown_algorithm_is_invalid_request() -> None:
    with pytest.raises(S3Error) as info:
        new_checksum("md5")
    assert info.value.code == "InvalidRequest"


# ---------------------------------------------------------------------- incremental use


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=20_000), cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=6))
def test_incremental_updates_equal_one_shot(algorithm: str, data: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(data), *(min(c, len(data)) for c in cuts)})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    expected = {"sha1": hashlib.sha1(data).digest(), "sha256": hashlib.sha256(data).digest()}.get(algorithm)
    whole = digest(algorithm, data)
    assert digest(algorithm, *pieces) == whole
    assert digest(algorithm, *(memoryview(bytearray(p)) for p in pieces)) == whole
    if expected is not None:
        assert whole == expected
    if algorithm == "crc64nvme":
        assert int.from_bytes(whole, "big") == crc64nvme_bitwise(data)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_copy_is_independent(algorithm: str) -> None:
    c = new_checksum(algorithm)
    c.update(b"1234")
    fork = c.copy()
    c.update(b"56789")
    assert c.digest() == digest(algorithm, CHECK)
    assert fork.digest() == digest(algorithm, b"1234")
    fork.update(b"56789")
    assert fork.digest() == c.digest()


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "crc64nvme"])
def test_large_buffers_and_memoryviews_of_them(algorithm: str) -> None:
    """Buffers past awscrt's GIL-release threshold (5 KiB) and slices of bigger ones."""
    data = random.Random(3).randbytes(3 * 1024 * 1024 + 17)
    view = memoryview(bytearray(data))
    assert digest(algorithm, view[: 1 << 20], view[1 << 20:]) == digest(algorithm, data)
    if algorithm == "crc64nvme":
        assert crc64nvme(data[:100_000]) == crc64nvme_bitwise(data[:100_000])


# ---------------------------------------------------------------------- combining CRCs


COMBINERS = {
    "crc_combine": crc_combine,  # awscrt's combine where this awscrt has it
    "pure_python": checksums._crc_combine_py,  # the fallback for an older awscrt
}


@pytest.mark.parametrize("combiner", list(COMBINERS))
@pytest.mark.parametrize("algorithm", COMBINABLE)
@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=6000), cut=st.integers(min_value=0, max_value=6000))
def test_combine_of_two_equals_crc_of_concatenation(combiner: str, algorithm: str, data: bytes, cut: int) -> None:
    a, b = data[:cut], data[cut:]
    combined = COMBINERS[combiner](algorithm, crc_int(algorithm, a), crc_int(algorithm, b), len(b))
    assert combined == crc_int(algorithm, data)


@pytest.mark.parametrize("algorithm", COMBINABLE)
@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=50_000),
       cuts=st.lists(st.integers(min_value=0, max_value=50_000), min_size=0, max_size=12))
def test_combine_b64_of_random_parts_equals_checksum_of_whole(algorithm: str, data: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(data), *(min(c, len(data)) for c in cuts)})
    parts = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)] or [b""]
    values = []
    for part in parts:
        c = new_checksum(algorithm)
        c.update(part)
        values.append((c.b64digest(), len(part)))
    whole = new_checksum(algorithm)
    whole.update(data)
    assert combine_b64(algorithm, values) == whole.b64digest()


@pytest.mark.parametrize("algorithm", COMBINABLE)
def test_combine_with_empty_parts_and_large_lengths(algorithm: str) -> None:
    rng = random.Random(5)
    a = rng.randbytes(1000)
    crc_a = crc_int(algorithm, a)
    empty = crc_int(algorithm, b"")
    for combine in COMBINERS.values():
        assert combine(algorithm, crc_a, empty, 0) == crc_a
        assert combine(algorithm, empty, crc_a, len(a)) == crc_a
        # a long run of zero bytes, computed for real
        zeros = bytes(3 * 1024 * 1024 + 5)
        assert combine(algorithm, crc_a, crc_int(algorithm, zeros), len(zeros)) == crc_int(algorithm, a + zeros)
    # lengths no part could have: both implementations still agree
    for n in (1 << 33, 5 * (1 << 40) + 3, (1 << 62) + 1):
        assert crc_combine(algorithm, crc_a, 0x1234, n) == checksums._crc_combine_py(algorithm, crc_a, 0x1234, n)


def test_combine_refuses_a_negative_length() -> None:
    with pytest.raises(ValueError):
        crc_combine("crc32", 1, 2, -1)


# ---------------------------------------------------------------------- the strict request parser

MULTIPLE = "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."


def b64(n: int, fill: int = 1) -> str:
    return base64.b64encode(bytes([fill]) * n).decode()


def valid(algorithm: str) -> str:
    return b64(DIGEST_SIZES[algorithm])


def refused(headers: Any) -> S3Error:
    with pytest.raises(S3Error) as info:
        UploadBody._checksum_request(headers)
    assert info.value.code == "InvalidRequest"
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_single_header_is_accepted(algorithm: str) -> None:
    value = valid(algorithm)
    assert UploadBody._checksum_request({f"x-amz-checksum-{algorithm}": value}) == (algorithm, value, False)
    # header names are case-insensitive, in a plain dict as in the request's Headers
    assert UploadBody._checksum_request({f"X-Amz-Checksum-{algorithm.upper()}": value}) == (algorithm, value, False)
    assert UploadBody._checksum_request(Headers([(f"X-Amz-Checksum-{algorithm}", value)])) == (algorithm, value, False)


def test_no_checksum_and_non_value_headers() -> None:
    assert UploadBody._checksum_request({}) == (None, None, False)
    assert UploadBody._checksum_request({"x-amz-checksum-type": "FULL_OBJECT", "x-amz-checksum-mode": "ENABLED",
                                         "content-type": "text/plain"}) == (None, None, False)
    # only the SDK's announcement: nothing to verify (the upload's default applies)
    assert UploadBody._checksum_request({"x-amz-sdk-checksum-algorithm": "CRC32"}) == (None, None, False)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_trailer_is_accepted(algorithm: str) -> None:
    headers = {"x-amz-trailer": f"x-amz-checksum-{algorithm}", "x-amz-sdk-checksum-algorithm": algorithm.upper()}
    assert UploadBody._checksum_request(headers) == (algorithm, None, True)


@pytest.mark.parametrize(
    "headers",
    [
        {"x-amz-checksum-crc32": valid("crc32"), "x-amz-checksum-sha256": valid("sha256")},
        {"x-amz-checksum-crc32c": valid("crc32c"), "x-amz-checksum-crc64nvme": valid("crc64nvme")},
        {"x-amz-checksum-crc32": valid("crc32"), "x-amz-trailer": "x-amz-checksum-crc32"},
        {"x-amz-checksum-sha1": valid("sha1"), "x-amz-trailer": "x-amz-checksum-crc32c"},
        {"x-amz-trailer": "x-amz-checksum-crc32, x-amz-checksum-sha1"},
        {"x-amz-checksum-crc32": "not even base64 of anything", "x-amz-checksum-crc32c": valid("crc32c")},
    ],
    ids=["crc32+sha256", "crc32c+crc64nvme", "header+same-trailer", "header+other-trailer", "two-trailers",
         "multiple-before-value-check"],
)
def test_several_checksums_are_refused(headers: dict[str, str]) -> None:
    assert refused(headers).message == MULTIPLE
    with pytest.raises(S3Error) as info:
        requested_checksums(headers)
    assert info.value.message == MULTIPLE


def test_the_same_header_twice_with_different_values_is_refused() -> None:
    headers = Headers([("x-amz-checksum-crc32", b64(4, 1)), ("X-Amz-Checksum-CRC32", b64(4, 2))])
    assert refused(headers).message.startswith("Expecting a single x-amz-checksum- header")
    same = Headers([("x-amz-checksum-crc32", b64(4, 1)), ("X-Amz-Checksum-CRC32", b64(4, 1))])
    assert UploadBody._checksum_request(same) == ("crc32", b64(4, 1), False)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("kind", ["short", "long", "not-base64", "empty", "bad-padding"])
def test_value_of_the_wrong_decoded_length_is_refused(algorithm: str, kind: str) -> None:
    size = DIGEST_SIZES[algorithm]
    value = {
        "short": b64(size - 1),
        "long": b64(size + 1),
        "not-base64": "%%%%" * 4,
        "empty": "",
        "bad-padding": b64(size).rstrip("=") + "===",
    }[kind]
    error = refused({f"x-amz-checksum-{algorithm}": value})
    assert error.message == f"Value for x-amz-checksum-{algorithm} header is invalid."


def test_other_digest_sizes_are_refused_for_each_algorithm() -> None:
    """A SHA-256-sized value in a CRC32 header (and so on): the wrong algorithm's size."""
    for algorithm in ALGORITHMS:
        for other in ALGORITHMS:
            if DIGEST_SIZES[other] != DIGEST_SIZES[algorithm]:
                error = refused({f"x-amz-checksum-{algorithm}": valid(other)})
                assert error.message == f"Value for x-amz-checksum-{algorithm} header is invalid."


def test_unknown_algorithm_or_trailer_is_refused() -> None:
    refused({"x-amz-checksum-md5": b64(16)})
    refused({"x-amz-trailer": "x-amz-checksum-xxhash64"})
    refused({"x-amz-trailer": "x-amz-meta-something"})
    refused({"x-amz-checksum-crc32": valid("crc32"), "x-amz-sdk-checksum-algorithm": "SHA256"})  # disagree
    refused({"x-amz-sdk-checksum-algorithm": "MD5"})


def test_non_canonical_base64_is_normalised() -> None:
    """b64decode ignores the unused low bits of the last character; the stored value and
    the comparison with our digest use the canonical encoding."""
    assert base64.b64decode("AAAAAB==") == bytes(4)
    assert UploadBody._checksum_request({"x-amz-checksum-crc32": "AAAAAB=="}) == ("crc32", "AAAAAA==", False)
    assert UploadBody._checksum_request({"x-amz-checksum-crc32": " AAAAAA== "}) == ("crc32", "AAAAAA==", False)


class _UntouchedBody:
    def __aiter__(self) -> Any:
        raise AssertionError("the body was read before the checksum headers were checked")


class _Request:
    def __init__(self, headers: Headers) -> None:
        self.headers = headers
        self.body = _UntouchedBody()


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([("x-amz-checksum-crc32", valid("crc32")), ("x-amz-checksum-sha1", valid("sha1"))], MULTIPLE),
        ([("x-amz-checksum-sha256", valid("crc32"))], "Value for x-amz-checksum-sha256 header is invalid."),
    ],
    ids=["multiple", "bad-value"],
)
def test_upload_body_refuses_before_reading_a_byte(pairs: list[tuple[str, str]], message: str) -> None:
    headers = Headers([("content-length", "5"), *pairs])
    with pytest.raises(S3Error) as info:
        UploadBody(_Request(headers), None)
    assert (info.value.code, info.value.message) == ("InvalidRequest", message)


def test_upload_body_with_a_valid_header_sets_up_its_checksum() -> None:
    value = base64.b64encode(digest("crc64nvme", CHECK)).decode()
    body = UploadBody(_Request(Headers([("content-length", "9"), ("x-amz-checksum-crc64nvme", value)])), None)
    assert (body.checksum_algorithm, body.checksum_expected, body.checksum_in_trailer) == ("crc64nvme", value, False)
    assert body.checksum is not None and body.checksum.algorithm == "crc64nvme"
    body.on_chunk(memoryview(CHECK))
    assert body.checksum.b64digest() == value


# ---------------------------------------------------------------------- not a test: throughput


def _throughput() -> None:  # pragma: no cover - run by hand: python -m tests.unit.test_checksums
    import os
    import time

    buf = os.urandom(8 * 1024 * 1024)
    for algorithm in ALGORITHMS:
        c = new_checksum(algorithm)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.5:
            c.update(buf)
            n += 1
        print(f"{algorithm:10s} {n * len(buf) / (time.perf_counter() - start) / 1e6:8.0f} MB/s")


if __name__ == "__main__":  # pragma: no cover
    _throughput()
