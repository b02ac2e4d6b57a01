"""Chunk checksums: the self-describing values and their one verifier (``core.chunksum``),
the v1 (SHA-256) and v2 chunk headers, the store verifying either on put and at rest,
the frontend's writes (XXH3-128 chunk checksums, the object's own SHA-256) and reads
(every form verified, a corrupt replica never served), the in-thread receipt hashing
with either algorithm.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio
import xxhash

from blobnode.chunkfile import HEADER_SIZE, MAGIC_V1, MAGIC_V2, pack_header, parse_header
from blobnode.store import ChunkStore, StoreError
from core import chunksum, wire
from core.chunksum import Algorithm, ChunkSum
from frontend.errors import S3Error
from frontend.reads import ChunkReads
from frontend.writes import ChunkWrites, Stored

MiB = 1024 * 1024


def sha_value(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def xxh_value(data: bytes) -> str:
    return "xxh3-128:" + xxhash.xxh3_128_hexdigest(data)


VALUES = {"sha256": sha_value, "xxh3": xxh_value}


def v1_header(size: int, data: bytes) -> bytes:
    """The chunk header written before XXH3-128, by hand: magic, u64 size, SHA-256, 16 zero bytes."""
    return b"CAIRNCK1" + struct.pack(">Q", size) + hashlib.sha256(data).digest() + b"\0" * 16


# ------------------------------------------------------------------------ values -> verifier


def test_a_sha256_value_parses_to_a_sha256_verifier() -> None:
    data = os.urandom(1000)
    check = chunksum.parse(sha_value(data))
    assert check == ChunkSum(Algorithm.SHA256, hashlib.sha256(data).digest())
    assert check.matches(data) and not check.matches(data[:-1])
    assert check.value == sha_value(data)


def test_an_xxh3_value_parses_to_an_xxh3_verifier() -> None:
    data = os.urandom(1000)
    check = chunksum.parse(xxh_value(data))
    assert check == ChunkSum(Algorithm.XXH3_128, xxhash.xxh3_128_digest(data))
    assert check.matches(data) and not check.matches(b"x" + data[1:])
    assert check.value == xxh_value(data)


def test_compute_is_xxh3_unless_told() -> None:
    data = os.urandom(5000)
    assert chunksum.compute(data).value == xxh_value(data)
    assert chunksum.compute(data, Algorithm.SHA256).value == sha_value(data)
    assert chunksum.compute(memoryview(bytearray(data))) == chunksum.compute(data)


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_streaming_hasher_matches_whole(algorithm: Algorithm) -> None:
    data = os.urandom(3 * MiB + 17)
    check = chunksum.compute(data, algorithm)
    hasher = check.hasher()
    view = memoryview(data)
    for at in range(0, len(data), MiB):
        hasher.update(view[at : at + MiB])
    assert check.matched(hasher)
    other = check.hasher()
    other.update(data[1:])
    assert not check.matched(other)


@pytest.mark.parametrize("bad", [
    "", "0" * 63, "0" * 65, "A" * 64, sha_value(b"x").upper(), "xxh3-128:" + "0" * 31, "xxh3-128:" + "F" * 32,
    "xxh3:" + "0" * 32, "sha256:" + "0" * 64, "0" * 32, "not-a-checksum", None, 123, b"\0" * 32,
])
def test_anything_else_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        chunksum.parse(bad)


def test_digest_length_is_checked() -> None:
    with pytest.raises(ValueError):
        ChunkSum(Algorithm.XXH3_128, b"\0" * 32)
    with pytest.raises(ValueError):
        ChunkSum(Algorithm.SHA256, b"\0" * 16)


# ------------------------------------------------------------------------ headers


def test_v1_header_reads_as_sha256() -> None:
    data = os.urandom(777)
    assert v1_header(1, b"")[:8] == MAGIC_V1
    size, check = parse_header(v1_header(len(data), data))
    assert size == 777 and check == chunksum.compute(data, Algorithm.SHA256)


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_v2_header_layout(algorithm: Algorithm) -> None:
    data = os.urandom(999)
    check = chunksum.compute(data, algorithm)
    raw = pack_header(len(data), check)
    assert len(raw) == HEADER_SIZE == 64
    assert raw[:8] == MAGIC_V2 == b"CAIRNCK2"
    assert struct.unpack(">Q", raw[8:16])[0] == 999
    assert raw[16] == int(algorithm) and raw[17:24] == b"\0" * 7
    n = len(check.digest)
    assert raw[24 : 24 + n] == check.digest and raw[24 + n :] == b"\0" * (40 - n)
    assert parse_header(raw) == (999, check)


@pytest.mark.parametrize("raw", [
    b"CAIRNCK1" + b"\0" * 40,  # short
    b"NOTCAIRN" + b"\0" * 56,  # unknown magic
    b"CAIRNCK3" + b"\0" * 56,  # a version this code does not know
    MAGIC_V2 + struct.pack(">QB", 1, 9) + b"\0" * 47,  # unknown algorithm
], ids=["short", "magic", "version", "algorithm"])
def test_unreadable_headers_are_damage(raw: bytes) -> None:
    with pytest.raises(StoreError) as err:
        parse_header(raw)
    assert err.value.code == "ChecksumMismatch"


# ------------------------------------------------------------------------ the store


def write_v1_chunk(store: ChunkStore, chunk_id: str, data: bytes) -> Path:
    """A chunk file as the code before XXH3-128 wrote it, placed by hand."""
    path = Path(store.path(chunk_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(v1_header(len(data), data) + data)
    return path


def flip(path: Path, at: int = HEADER_SIZE + 10) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF
    path.write_bytes(raw)


def test_a_v1_chunk_stays_readable_and_verified_with_sha256(tmp_path: Path) -> None:
    store = ChunkStore(str(tmp_path))
    cid, data = uuid.uuid4().hex, os.urandom(20_000)
    path = write_v1_chunk(store, cid, data)
    assert store.stat(cid) == (20_000, sha_value(data))
    size, value, got = store.read(cid)
    assert (size, value, bytes(got)) == (20_000, sha_value(data), data)
    assert store.verify(cid) == (True, 20_000)
    # a re-put under its own SHA-256 (a repair, an old frontend's retry) leaves it as it is
    before = path.read_bytes()
    assert store.put(cid, sha_value(data), data) is False
    assert path.read_bytes() == before and before[:8] == b"CAIRNCK1"
    flip(path)
    assert store.verify(cid) == (False, 20_000)


@pytest.mark.parametrize("kind", ["sha256", "xxh3"])
def test_put_verifies_with_the_named_algorithm_and_records_it(tmp_path: Path, kind: str) -> None:
    store = ChunkStore(str(tmp_path))
    cid, data = uuid.uuid4().hex, os.urandom(100_000)
    value = VALUES[kind](data)
    for wrong in (VALUES[kind](data[:-1]), VALUES[kind](b"")):
        with pytest.raises(StoreError) as err:
            store.put(cid, wrong, data)
        assert err.value.code == "ChecksumMismatch"
    assert not store.holds(cid)
    assert store.put(cid, value, data) is True
    raw = Path(store.path(cid)).read_bytes()
    assert raw[:8] == b"CAIRNCK2" and raw[16] == (1 if kind == "sha256" else 2)
    assert store.stat(cid) == (100_000, value)
    assert store.verify(cid) == (True, 100_000)
    assert store.put(cid, value, data) is False  # idempotent
    flip(Path(store.path(cid)))
    assert store.verify(cid) == (False, 100_000)
    assert store.put(cid, value, data) is True  # a re-put replaces a damaged copy
    assert store.verify(cid) == (True, 100_000)


@pytest.mark.parametrize("bad", ["not-a-checksum", "xxh3-128:" + "0" * 31, "", "blake3:" + "0" * 64])
def test_put_with_an_unverifiable_checksum_stores_nothing(tmp_path: Path, bad: str) -> None:
    store = ChunkStore(str(tmp_path))
    cid = uuid.uuid4().hex
    with pytest.raises(StoreError) as err:
        store.put(cid, bad, b"abc")
    assert err.value.code == "ChecksumMismatch" and not store.holds(cid)
    assert os.listdir(store.tmp_dir) == []


def test_damaged_header_digest_is_found_by_verify(tmp_path: Path) -> None:
    store = ChunkStore(str(tmp_path))
    v1, v2 = uuid.uuid4().hex, uuid.uuid4().hex
    data = os.urandom(5000)
    write_v1_chunk(store, v1, data)
    store.put(v2, xxh_value(data), data)
    flip(Path(store.path(v1)), 20)  # in the SHA-256 digest
    flip(Path(store.path(v2)), 30)  # in the XXH3-128 digest
    assert store.verify(v1) == (False, 5000) and store.verify(v2) == (False, 5000)


# ------------------------------------------------------------------------ the frontend's writes


class Writes(ChunkWrites):
    def __init__(self) -> None:  # only _hash_chunk is exercised: no buffers, no nodes
        pass


@pytest.mark.parametrize("sizes", [[1000], [3 * MiB, MiB + 5, 70_000]], ids=["small", "threads"])
async def test_chunks_get_xxh3_and_the_object_its_own_sha256(sizes: list[int]) -> None:
    writes, stored = Writes(), Stored()
    seen: list[bytes] = []
    bodies = [os.urandom(n) for n in sizes]
    for body in bodies:
        await writes._hash_chunk(memoryview(body), stored, lambda v: seen.append(bytes(v)))
    whole = b"".join(bodies)
    assert [c[2] for c in stored.chunks] == [xxh_value(b) for b in bodies]
    assert [c[1] for c in stored.chunks] == sizes and stored.size == len(whole)
    assert stored.sha256.hexdigest() == hashlib.sha256(whole).hexdigest()
    assert stored.md5.hexdigest() == hashlib.md5(whole).hexdigest()
    assert seen == bodies


# ------------------------------------------------------------------------ the frontend's reads


class Node:
    def __init__(self, node_id: str) -> None:
        self.node_id, self.addr = node_id, f"{node_id}:1"


class Directory:
    def __init__(self, node_ids: list[str]) -> None:
        self.fresh = trio.Event()
        self.fresh.set()
        self.nodes = {n: Node(n) for n in node_ids}
        self.failed: list[str] = []

    def read_order(self, node_ids: list[str]) -> list[str]:
        return list(node_ids)

    def mark_failed(self, node_id: str) -> None:
        self.failed.append(node_id)

    def observe(self, node_id: str, seconds: float) -> None:
        pass


class Blobs:
    """Blob nodes by address: the bytes each returns for any chunk (as the wire does,
    ``consume`` sees them in steps)."""

    def __init__(self, replies: dict[str, bytes]) -> None:
        self.replies = replies
        self.asked: list[str] = []

    async def get(self, addr: str, chunk_id: str, *, timeout: float | None = None, into: Any = None,
                  consume: Any = None) -> tuple[dict, bytearray | memoryview]:
        self.asked.append(addr)
        body = self.replies[addr]
        data = into(len(body)) if into is not None else bytearray(len(body))
        data[:] = body
        if consume is not None:
            for at in range(0, len(body), MiB):
                consume(memoryview(data)[at : at + MiB])
        return {"ok": True, "size": len(body)}, data


class Reads(ChunkReads):
    def __init__(self, blobs: Blobs, directory: Directory) -> None:
        self.blobs, self.directory = blobs, directory  # type: ignore[assignment]


@pytest.mark.parametrize("size", [10_000, 3 * MiB + 1], ids=["small", "streamed"])
@pytest.mark.parametrize("kind", ["sha256", "xxh3"])
async def test_a_corrupt_replica_is_never_served_and_the_next_is_tried(kind: str, size: int) -> None:
    data = os.urandom(size)
    bad = bytearray(data)
    bad[size // 2] ^= 1
    blobs = Blobs({"a:1": bytes(bad), "b:1": data[:-1], "c:1": data})
    reads = Reads(blobs, Directory(["a", "b", "c"]))
    reported: list[tuple[str, str]] = []
    got = await reads.read_chunk(["cid", size, VALUES[kind](data), ["a", "b", "c"]],
                                 lambda c, n: reported.append((c, n)))
    assert bytes(got) == data
    assert blobs.asked == ["a:1", "b:1", "c:1"] and reported == [("cid", "a"), ("cid", "b")]


@pytest.mark.parametrize("kind", ["sha256", "xxh3"])
async def test_no_intact_replica_fails(kind: str) -> None:
    data = os.urandom(5000)
    blobs = Blobs({"a:1": data[1:] + b"x", "b:1": b""})
    reads = Reads(blobs, Directory(["a", "b"]))
    with pytest.raises(S3Error) as err:
        await reads.read_chunk(["cid", 5000, VALUES[kind](data), ["a", "b"]])
    assert err.value.code == "ServiceUnavailable"


@pytest.mark.parametrize("kind", ["sha256", "xxh3"])
async def test_inline_chunks_are_verified_in_either_form(kind: str) -> None:
    reads = Reads(Blobs({}), Directory([]))
    data = b"inline bytes"
    good = ["cid", len(data), VALUES[kind](data), [], data]
    assert bytes(await reads.read_chunk(good)) == data
    for corrupt in (["cid", len(data), VALUES[kind](data), [], b"inline bytez"],
                    ["cid", len(data), VALUES[kind](b"other"), [], data]):
        with pytest.raises(S3Error) as err:
            await reads.read_chunk(corrupt)
        assert err.value.code == "InternalError"


async def test_an_unknown_checksum_is_never_served() -> None:
    blobs = Blobs({"a:1": b"abc"})
    reads = Reads(blobs, Directory(["a"]))
    with pytest.raises(S3Error) as err:
        await reads.read_chunk(["cid", 3, "md5:" + "0" * 32, ["a"]])
    assert err.value.code == "InternalError" and blobs.asked == []


# ------------------------------------------------------------------------ hashing on receipt


@pytest.mark.parametrize("algorithm", list(Algorithm))
async def test_recv_payload_in_thread_hashes_with_the_chunks_algorithm(algorithm: Algorithm) -> None:
    data = os.urandom(5 * MiB + 3)
    check = chunksum.compute(data, algorithm)
    a, b = socket.socketpair()
    reader = wire.FramedSocket(trio.socket.from_stdlib_socket(a))
    writer = trio.socket.from_stdlib_socket(b)
    hasher = check.hasher()
    into = memoryview(bytearray(len(data)))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wire.FramedSocket(writer)._send_all, data)
            with trio.fail_after(20):
                await reader.recv_payload_in_thread(into, hasher.update)
    finally:
        a.close()
        b.close()
    assert bytes(into) == data and check.matched(hasher)
