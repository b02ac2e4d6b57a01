"""The S3 additional checksums against outside references: published test vectors, a
bitwise CRC-64/NVME, botocore's and awscrt's implementations, CRC combination; and
``requested_checksums`` / ``RequestedChecksum.verify`` as uploads use them.

Property tests, combination and the strict request parser are in test_checksums.py.
"""

from __future__ import annotations

import base64
import random

import pytest
from botocore.httpchecksum import Crc32Checksum, Sha1Checksum, Sha256Checksum

from frontend.checksums import ALGORITHMS, RequestedChecksum, check_value, crc64nvme, new_checksum, requested_checksums
from frontend.errors import S3Error
from tests.unit.chunked_helpers import crc32_b64


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
