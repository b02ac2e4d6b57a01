"""The S3 "additional checksums": CRC32, CRC32C, SHA-1, SHA-256 and CRC64NVME.

Every checksum object has ``update(buf)``, ``digest() -> bytes`` (big-endian, as S3
sends it), ``b64digest() -> str`` (the value of an ``x-amz-checksum-<algorithm>``
header or trailer) and ``copy()``.

Implementations, the fastest measured for each (single thread, MB/s = 1e6 bytes/s, on
random 64 KiB / 1 MiB / 8 MiB buffers, 2-core x86-64 VM; each releases the GIL on
large buffers):
- CRC32: ``zlib.crc32`` (~2,800 MB/s); ``awscrt.checksums.crc32`` is slower (~1,900);
- CRC32C: the ``crc32c`` package (~5,600-6,000); ``awscrt.checksums.crc32c`` is as
  fast up to 1 MiB and slower on 8 MiB buffers (~3,300-4,000);
- CRC64NVME: ``awscrt.checksums.crc64nvme`` (~7,500; the pure-Python folding it
  replaces did 41 MB/s here, holding the GIL).
Combining CRCs (FULL_OBJECT multipart checksums) uses ``awscrt.checksums.combine_*``
(about 3-5 us a call) where this awscrt has them, else ``_crc_combine_py``: zlib's
x^(8n) mod P method, O(log n) polynomial products (about 0.1 ms; the GF(2) matrix
squaring it replaces took 4-18 ms a call).

``requested_checksums(headers)`` reads the checksum a request asks the server to
verify: an ``x-amz-checksum-<algorithm>`` header, an ``x-amz-trailer`` naming one that
arrives in an aws-chunked trailer, or only ``x-amz-sdk-checksum-algorithm``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import crc32c as _crc32c
from awscrt import checksums as _crt

from frontend.errors import S3Error

ALGORITHMS = ("crc32", "crc32c", "sha1", "sha256", "crc64nvme")

# digest sizes in bytes, to validate base64 values a client sends
DIGEST_SIZES = {"crc32": 4, "crc32c": 4, "sha1": 20, "sha256": 32, "crc64nvme": 8}

# x-amz-checksum-* request headers that do not carry a checksum value
_NON_VALUE_HEADERS = frozenset({"x-amz-checksum-mode", "x-amz-checksum-type", "x-amz-checksum-algorithm"})


class Checksum:
    """Base class: an incremental checksum of one algorithm."""

    algorithm: str = ""

    def update(self, buf: bytes | bytearray | memoryview) -> None:
        raise NotImplementedError

    def digest(self) -> bytes:
        raise NotImplementedError

    def copy(self) -> Checksum:
        raise NotImplementedError

    def b64digest(self) -> str:
        return base64.b64encode(self.digest()).decode("ascii")

    def hexdigest(self) -> str:
        return self.digest().hex()


class _Crc32(Checksum):
    algorithm = "crc32"

    def __init__(self, value: int = 0) -> None:
        self._value = value

    def update(self, buf: bytes | bytearray | memoryview) -> None:
        self._value = zlib.crc32(buf, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")

    def copy(self) -> Checksum:
        return _Crc32(self._value)


class _Crc32c(Checksum):
    algorithm = "crc32c"

    def __init__(self, value: int = 0) -> None:
        self._value = value

    def update(self, buf: bytes | bytearray | memoryview) -> None:
        self._value = _crc32c.crc32c(buf, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")

    def copy(self) -> Checksum:
        return _Crc32c(self._value)


class _Hashlib(Checksum):
    def __init__(self, algorithm: str, hasher: Any = None) -> None:
        self.algorithm = algorithm
        self._hasher = hasher if hasher is not None else hashlib.new(algorithm)

    def update(self, buf: bytes | bytearray | memoryview) -> None:
        self._hasher.update(buf)

    def digest(self) -> bytes:
        return self._hasher.digest()

    def copy(self) -> Checksum:
        return _Hashlib(self.algorithm, self._hasher.copy())


# CRC64NVME: reflected polynomial 0x9a6c9329ac4bc9b5, init and xorout all ones.
_CRC64_POLY_REFLECTED = 0x9A6C9329AC4BC9B5


class _Crc64Nvme(Checksum):
    algorithm = "crc64nvme"

    def __init__(self, value: int = 0) -> None:
        self._value = value  # the CRC of everything so far (awscrt continues from it)

    def update(self, buf: bytes | bytearray | memoryview) -> None:
        self._value = _crt.crc64nvme(buf, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(8, "big")

    def copy(self) -> Checksum:
        return _Crc64Nvme(self._value)


def crc64nvme(data: bytes | bytearray | memoryview) -> int:
    """The CRC64NVME of data as an integer (convenience for tests and one-shot use)."""
    checksum = _Crc64Nvme()
    checksum.update(data)
    return int.from_bytes(checksum.digest(), "big")


def new_checksum(algorithm: str) -> Checksum:
    """A fresh checksum for algorithm (case-insensitive); unknown -> S3Error InvalidRequest."""
    name = algorithm.lower()
    if name == "crc32":
        return _Crc32()
    if name == "crc32c":
        return _Crc32c()
    if name in ("sha1", "sha256"):
        return _Hashlib(name)
    if name == "crc64nvme":
        return _Crc64Nvme()
    raise S3Error("InvalidRequest", f"Checksum algorithm {algorithm!r} is not supported.")


# ---------------------------------------------------------------------------
# what a request asks for
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestedChecksum:
    """The one additional checksum a request carries or announces.

    ``algorithm``: one of ALGORITHMS. ``location``: "header" (``expected`` holds the
    base64 value from the ``x-amz-checksum-<algorithm>`` header), "trailer" (the value
    arrives as the aws-chunked trailer ``header_name``; ``expected`` is None until the
    caller reads it from ``AwsChunkedDecoder.finish()``), or "none" (only
    ``x-amz-sdk-checksum-algorithm`` was sent: the server computes and returns it but
    has nothing to compare against).
    """

    algorithm: str
    location: str
    expected: str | None = None

    @property
    def header_name(self) -> str:
        return f"x-amz-checksum-{self.algorithm}"

    def new(self) -> Checksum:
        return new_checksum(self.algorithm)

    def verify(self, computed: Checksum, expected: str | None = None) -> None:
        """Raise BadDigest unless computed matches expected (default: self.expected).

        For the trailer case pass the trailer value; a missing trailer is InvalidRequest.
        """
        value = expected if expected is not None else self.expected
        if value is None:
            if self.location == "none":
                return
            raise S3Error("InvalidRequest", f"The {self.header_name} trailer was announced but not sent.")
        check_value(self.algorithm, value)
        if computed.b64digest() != value:
            raise S3Error(
                "BadDigest", f"The {self.algorithm.upper()} you specified did not match the calculated checksum."
            )


def check_value(algorithm: str, value: str) -> bytes:
    """Decode a base64 checksum value, or raise InvalidRequest as S3 does for a malformed one."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != DIGEST_SIZES[algorithm]:
        raise S3Error("InvalidRequest", f"Value for x-amz-checksum-{algorithm} header is invalid.")
    return raw


def _iter_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> Iterable[tuple[str, str]]:
    if isinstance(headers, Mapping):
        return headers.items()
    return headers


def _algorithm_of(name: str) -> str:
    algorithm = name[len("x-amz-checksum-") :]
    if algorithm not in ALGORITHMS:
        raise S3Error("InvalidRequest", f"Checksum algorithm {algorithm!r} is not supported.")
    return algorithm


def requested_checksums(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> RequestedChecksum | None:
    """The additional checksum a PUT/UploadPart request carries, or None.

    Reads (names case-insensitive) ``x-amz-checksum-<algorithm>`` headers,
    ``x-amz-trailer`` and ``x-amz-sdk-checksum-algorithm``. S3 allows a single checksum
    per request: more than one -> InvalidRequest, as is an unknown algorithm, a value
    that is not base64 of the right size, a non-checksum trailer, or an
    ``x-amz-sdk-checksum-algorithm`` that disagrees with the header/trailer.
    """
    values: dict[str, str] = {}
    trailers: list[str] = []
    sdk: str | None = None
    for raw_name, value in _iter_headers(headers):
        name = raw_name.lower()
        if name.startswith("x-amz-checksum-") and name not in _NON_VALUE_HEADERS:
            algorithm = _algorithm_of(name)
            if algorithm in values and values[algorithm] != value.strip():
                raise S3Error("InvalidRequest", "Expecting a single x-amz-checksum- header")
            values[algorithm] = value.strip()
        elif name == "x-amz-trailer":
            trailers.extend(t.strip().lower() for t in value.split(",") if t.strip())
        elif name == "x-amz-sdk-checksum-algorithm":
            sdk = value.strip().lower()
            if sdk not in ALGORITHMS:
                raise S3Error("InvalidRequest", "Value for x-amz-sdk-checksum-algorithm header is invalid.")
    trailer_algorithms = []
    for trailer in trailers:
        if not trailer.startswith("x-amz-checksum-") or trailer in _NON_VALUE_HEADERS:
            raise S3Error("InvalidRequest", f"The trailer {trailer!r} is not supported.")
        trailer_algorithms.append(_algorithm_of(trailer))
    if len(values) + len(set(trailer_algorithms)) > 1:
        raise S3Error(
            "InvalidRequest", "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
        )
    result: RequestedChecksum | None = None
    if values:
        algorithm, value = next(iter(values.items()))
        check_value(algorithm, value)
        result = RequestedChecksum(algorithm, "header", value)
    elif trailer_algorithms:
        result = RequestedChecksum(trailer_algorithms[0], "trailer")
    if sdk is not None:
        if result is None:
            return RequestedChecksum(sdk, "none")
        if result.algorithm != sdk:
            raise S3Error("InvalidRequest", "Value for x-amz-sdk-checksum-algorithm header is invalid.")
    return result


# ---------------------------------------------------------------------- combining CRCs

# Reflected polynomials of the CRCs S3 accepts as FULL_OBJECT multipart checksums; all
# three start from all ones and end xored with all ones, as zlib's CRC-32 does.
_COMBINABLE = {"crc32": (0xEDB88320, 32), "crc32c": (0x82F63B78, 32), "crc64nvme": (_CRC64_POLY_REFLECTED, 64)}
COMBINABLE = tuple(_COMBINABLE)


def _multmodp(a: int, b: int, poly: int, width: int) -> int:
    """a(x)*b(x) mod P(x), both in the reflected representation (bit width-1 is x^0)."""
    m = 1 << (width - 1)
    p = 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ poly if b & 1 else b >> 1


@functools.cache
def _x2n_table(algorithm: str) -> tuple[int, ...]:
    """x^(2^k) mod P for k = 0..66 (enough for any 64-bit byte count times 8)."""
    poly, width = _COMBINABLE[algorithm]
    p = 1 << (width - 2)  # x^1
    table = [p]
    for _ in range(66):
        p = _multmodp(p, p, poly, width)
        table.append(p)
    return tuple(table)


@functools.lru_cache(maxsize=256)  # parts mostly share one size
def _x8nmodp(algorithm: str, nbytes: int) -> int:
    """x^(8*nbytes) mod P: the operator that appends nbytes zero bytes to a CRC."""
    poly, width = _COMBINABLE[algorithm]
    table = _x2n_table(algorithm)
    p = 1 << (width - 1)  # x^0
    k = 3  # 8 * nbytes: start at x^(2^3)
    while nbytes:
        if nbytes & 1:
            p = _multmodp(table[k], p, poly, width)
        nbytes >>= 1
        k += 1
    return p


def _crc_combine_py(algorithm: str, crc1: int, crc2: int, len2: int) -> int:
    """The CRC of A+B from crc(A), crc(B) and len(B), without the data (zlib's
    crc32_combine, for any of the reflected CRCs above): crc1 times x^(8*len2) mod P,
    O(log len2) polynomial products. Init and xorout cancel out: both are all ones."""
    if len2 == 0:
        return crc1
    poly, width = _COMBINABLE[algorithm]
    return _multmodp(_x8nmodp(algorithm, len2), crc1, poly, width) ^ crc2


# awscrt has combine functions from about 0.30 on (aws-crt-python PR 707, Dec 2025)
_CRT_COMBINE: dict[str, Callable[[int, int, int], int]] = {
    name: fn for name in COMBINABLE if (fn := getattr(_crt, f"combine_{name}", None)) is not None
}


def crc_combine(algorithm: str, crc1: int, crc2: int, len2: int) -> int:
    """The CRC of A+B from crc(A), crc(B) and len(B) (>= 0), without the data."""
    if len2 < 0:
        raise ValueError("len2 must not be negative")
    fn = _CRT_COMBINE.get(algorithm)
    if fn is not None:
        return fn(crc1, crc2, len2)
    return _crc_combine_py(algorithm, crc1, crc2, len2)


def combine_b64(algorithm: str, parts: list[tuple[str, int]]) -> str:
    """The whole object's CRC, base64 as S3 sends it, from its parts' (base64 CRC, size)."""
    width = _COMBINABLE[algorithm][1] // 8
    total = 0
    for i, (value, size) in enumerate(parts):
        crc = int.from_bytes(base64.b64decode(value), "big")
        total = crc if i == 0 else crc_combine(algorithm, total, crc, size)
    return base64.b64encode(total.to_bytes(width, "big")).decode("ascii")
