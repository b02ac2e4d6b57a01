"""Chunk checksums: one self-describing value, and the one function that turns it into
a verifier (``parse``). Pure.

A chunk's checksum guards its bytes in flight (frontend -> blob node, blob node ->
frontend, blob node -> blob node on repair) and at rest (the chunk file's header, the
scrubber). It travels as a string, the same in a manifest entry (``[id, size, checksum,
[node ids]]``, inline ``[id, size, checksum, [], bytes]``), on the blob-node wire
(``checksum`` of put, get, stat and pull) and in a chunk file's header (as an algorithm
number and the raw digest, ``blobnode.chunkfile``):

  ``xxh3-128:`` + 32 lowercase hex digits   XXH3-128, every chunk written now
  64 lowercase hex digits                   SHA-256, chunks written before XXH3-128:
                                            kept, and verified with SHA-256, forever

A value of any other shape is refused (``ValueError``): nothing is ever taken as
verified by a checksum this code cannot compute. XXH3-128 is not cryptographic: it
guards against rot, torn writes and bugs, not against a forger; the object's SHA-256
(in its metadata), the S3 ETag (MD5) and the S3 additional checksums are separate.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

import xxhash

__all__ = ["Algorithm", "ChunkSum", "Hasher", "compute", "parse"]


class Algorithm(enum.IntEnum):
    """A chunk checksum's algorithm; the number is the one in a v2 chunk header."""

    SHA256 = 1
    XXH3_128 = 2


DEFAULT = Algorithm.XXH3_128  # what new chunks are written with
PREFIX = "xxh3-128:"
DIGEST_SIZE = {Algorithm.SHA256: 32, Algorithm.XXH3_128: 16}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_XXH3 = re.compile(re.escape(PREFIX) + r"([0-9a-f]{32})")


class Hasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...
    def digest(self) -> bytes: ...


def new_hasher(algorithm: Algorithm) -> Hasher:
    """A streaming hasher of ``algorithm`` (both kinds release the GIL on large inputs)."""
    return hashlib.sha256() if algorithm == Algorithm.SHA256 else xxhash.xxh3_128()


def _digest(algorithm: Algorithm, data: bytes | bytearray | memoryview) -> bytes:
    if algorithm == Algorithm.SHA256:
        return hashlib.sha256(data).digest()
    return xxhash.xxh3_128_digest(data)


@dataclass(frozen=True)
class ChunkSum:
    """A chunk's checksum: its algorithm and digest, and how to check bytes against it."""

    algorithm: Algorithm
    digest: bytes

    def __post_init__(self) -> None:
        if len(self.digest) != DIGEST_SIZE[self.algorithm]:
            raise ValueError(f"a {self.algorithm.name} digest has {DIGEST_SIZE[self.algorithm]} bytes")

    @property
    def value(self) -> str:
        """The self-describing string (manifests, the wire): the inverse of ``parse``."""
        if self.algorithm == Algorithm.SHA256:
            return self.digest.hex()
        return PREFIX + self.digest.hex()

    def hasher(self) -> Hasher:
        """A streaming hasher of this checksum's algorithm (``matched`` judges it)."""
        return new_hasher(self.algorithm)

    def matched(self, hasher: Hasher) -> bool:
        return hasher.digest() == self.digest

    def matches(self, data: bytes | bytearray | memoryview) -> bool:
        """Whether ``data`` has this checksum."""
        return _digest(self.algorithm, data) == self.digest


def parse(value: object) -> ChunkSum:
    """The verifier for a stored or received checksum value (see the module docstring).
    Raises ValueError for anything else (an unknown algorithm, upper-case hex, not a string)."""
    if isinstance(value, str):
        if _SHA256.fullmatch(value):
            return ChunkSum(Algorithm.SHA256, bytes.fromhex(value))
        if m := _XXH3.fullmatch(value):
            return ChunkSum(Algorithm.XXH3_128, bytes.fromhex(m.group(1)))
    raise ValueError(f"not a chunk checksum: {str(value)[:80]!r}")


def compute(data: bytes | bytearray | memoryview, algorithm: Algorithm = DEFAULT) -> ChunkSum:
    """The checksum of ``data`` (XXH3-128 unless told)."""
    return ChunkSum(algorithm, _digest(algorithm, data))
