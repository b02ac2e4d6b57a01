"""A blob node's disk: integrity checks on put, the on-disk layout and header, O_DIRECT
and buffered writes, damaged chunk files, a full disk, and a restart over an existing
data directory. Through the protocol where a client would see it, through
``ChunkStore`` where only the disk can.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import uuid
from functools import partial
from pathlib import Path

import pytest
import trio
import xxhash

from blobnode.chunkfile import HEADER_SIZE, MAGIC, SENDFILE_MIN
from blobnode.client import BlobClient
from blobnode.store import ChunkStore, StoreError
from core import wire
from tests.integration.blobnodes import (
    SECRET,
    MiB,
    assert_alive,
    blob_node,
    checksum,
    chunk_files,
    new_id,
    put_chunk,
    rot,
    server_problem,
    tmp_files,
)

# ------------------------------------------------------------------------ integrity


async def test_checksum_mismatch_stores_nothing(tmp_path: Path) -> None:
    async with blob_node(tmp_path) as served:
        client = BlobClient(SECRET)
        cid, data = new_id(), os.urandom(100_000)
        wrong = [checksum(data[:-1]), "0" * 64, checksum(data).upper(), "not-a-sha"]
        for bad in wrong:
            with pytest.raises(wire.WireError) as err:
                await client.put(served.addr, cid, bad, data)
            assert err.value.code == wire.ERR_CHECKSUM
        assert chunk_files(tmp_path) == [] and tmp_files(tmp_path) == []
        with pytest.raises(wire.WireError) as err:
            await client.stat(served.addr, cid)
        assert err.value.code == wire.ERR_NOT_FOUND
        info = await client.info(served.addr)
        assert (info["chunks"], info["used"]) == (0, 0)

        # a mismatching put to an id that exists leaves the stored chunk untouched
        await client.put(served.addr, cid, checksum(data), data)
        other = os.urandom(100)
        with pytest.raises(wire.WireError) as err:
            await client.put(served.addr, cid, checksum(data), other)
        assert err.value.code == wire.ERR_CHECKSUM
        _, got = await client.get(served.addr, cid)
        assert bytes(got) == data
        assert tmp_files(tmp_path) == []


async def test_idempotent_re_put(tmp_path: Path) -> None:
    async with blob_node(tmp_path) as served:
        client = BlobClient(SECRET)
        cid, data = new_id(), os.urandom(4096)
        assert await client.put(served.addr, cid, checksum(data), data) is True
        path = served.store.path(cid)
        mtime = os.stat(path).st_mtime_ns
        for _ in range(3):
            assert await client.put(served.addr, cid, checksum(data), data) is False
        assert os.stat(path).st_mtime_ns == mtime  # not rewritten
        info = await client.info(served.addr)
        assert (info["chunks"], info["used"]) == (1, 4096)
        assert len(chunk_files(tmp_path)) == 1 and tmp_files(tmp_path) == []
        _, got = await client.get(served.addr, cid)
        assert bytes(got) == data


async def test_concurrent_puts_of_same_id_counted_once(tmp_path: Path) -> None:
    """Two writers racing on one chunk id (a frontend retrying a put that timed out while
    the first attempt is still being written). Deterministic: both puts are held right
    before their rename until both have passed the existence check."""
    async with blob_node(tmp_path) as served:
        store = served.store
        gate = threading.Barrier(2, timeout=10)

        def make_parents(final: str) -> None:
            gate.wait()
            ChunkStore._make_parents(store, final)

        store._make_parents = make_parents  # type: ignore[method-assign]
        cid, data = new_id(), os.urandom(10_000)
        results: list[bool] = []

        async def put() -> None:
            results.append(await BlobClient(SECRET).put(served.addr, cid, checksum(data), data))

        async with trio.open_nursery() as puts:
            puts.start_soon(put)
            puts.start_soon(put)
        del store._make_parents
        _, got = await BlobClient(SECRET).get(served.addr, cid)
        info = await BlobClient(SECRET).info(served.addr)
    # asserted outside the server's nursery, so that a failure is an AssertionError, not an ExceptionGroup
    assert sorted(results) == [False, True] or results == [True, True]
    assert len(chunk_files(tmp_path)) == 1 and tmp_files(tmp_path) == []
    assert bytes(got) == data
    assert (info["chunks"], info["used"]) == (1, 10_000), f"counters drifted from disk: {info}, puts {results}"


# ------------------------------------------------------------------------ layout


async def test_on_disk_layout(tmp_path: Path) -> None:
    async with blob_node(tmp_path) as served:
        client = BlobClient(SECRET)
        cid, data = "abcd" + uuid.uuid4().hex[4:], os.urandom(12345)
        await client.put(served.addr, cid, checksum(data), data)
        path = tmp_path / "chunks" / "ab" / "cd" / cid
        assert chunk_files(tmp_path) == [path]
        assert served.store.path(cid) == str(path)
        raw = path.read_bytes()
        assert HEADER_SIZE == 64 and len(raw) == 64 + len(data)
        assert raw[:8] == MAGIC == b"CAIRNCK2"
        assert struct.unpack(">Q", raw[8:16])[0] == len(data)
        assert raw[16] == 2 and raw[17:24] == b"\0" * 7  # XXH3-128
        assert raw[24:40] == xxhash.xxh3_128_digest(data)
        assert raw[40:64] == b"\0" * 24
        assert raw[64:] == data
        assert tmp_files(tmp_path) == []
        assert (tmp_path / "node_id").is_file()


@pytest.mark.parametrize("direct", [True, False], ids=["o_direct", "buffered"])
def test_direct_and_buffered_writes_make_the_same_files(tmp_path: Path, direct: bool) -> None:
    """O_DIRECT writes are padded to the block size and cut back: each file is exactly
    header + payload, whatever the size, and a pooled buffer reused for a smaller chunk
    leaves nothing of the bigger one behind."""
    store = ChunkStore(str(tmp_path))
    store.direct = store.direct and direct
    for size in (3 * MiB, 0, 1, 4095, 4096, 4097, 12345, MiB + 1):
        cid, data = new_id(), os.urandom(size)
        assert store.put(cid, checksum(data), data) is True
        raw = Path(store.path(cid)).read_bytes()
        assert len(raw) == HEADER_SIZE + size and raw[HEADER_SIZE:] == data
        assert bytes(store.read(cid)[2]) == data and store.verify(cid) == (True, size)
    assert store.direct == (direct and ChunkStore(str(tmp_path)).direct)
    assert tmp_files(tmp_path) == []


# ------------------------------------------------------------------------ damaged chunk files


async def test_damaged_chunk_files_on_disk(tmp_path: Path) -> None:
    async with blob_node(tmp_path) as served:
        client = BlobClient(SECRET)
        flipped, cut, magic = new_id(), new_id(), new_id()
        data = os.urandom(10_000)
        for cid in (flipped, cut, magic):
            await client.put(served.addr, cid, checksum(data), data)

        # a flipped byte in the body: returned as stored, with the checksum of the original
        path = Path(served.store.path(flipped))
        raw = bytearray(path.read_bytes())
        raw[HEADER_SIZE + 5000] ^= 0xFF
        path.write_bytes(raw)
        reply, got = await client.get(served.addr, flipped)
        assert bytes(got) == bytes(raw[HEADER_SIZE:]) != data
        assert reply["checksum"] == checksum(data) != checksum(got)
        assert reply["size"] == 10_000
        assert (await client.stat(served.addr, flipped))["checksum"] == checksum(data)

        # a body cut short: the bytes that are there are returned as-is; a read reaching
        # past the cut is refused rather than padded
        path = Path(served.store.path(cut))
        path.write_bytes(path.read_bytes()[: HEADER_SIZE + 4000])
        reply, got = await client.get(served.addr, cut, 0, 4000)
        assert bytes(got) == data[:4000] and reply["size"] == 10_000
        reply, got = await client.get(served.addr, cut, 1000, 500)
        assert bytes(got) == data[1000:1500]
        for off, length in ((0, None), (3999, 2), (5000, 10)):
            with pytest.raises(wire.WireError) as err:
                await client.get(served.addr, cut, off, length)
            assert err.value.code == wire.ERR_CHECKSUM
        assert (await client.stat(served.addr, cut))["size"] == 10_000

        # a bad header magic: refused on get and stat
        path = Path(served.store.path(magic))
        raw = bytearray(path.read_bytes())
        raw[:8] = b"NOTCAIRN"
        path.write_bytes(raw)
        for call in (partial(client.get, served.addr, magic), partial(client.stat, served.addr, magic)):
            with pytest.raises(wire.WireError) as err:
                await call()
            assert err.value.code == wire.ERR_CHECKSUM
        await assert_alive(served)


@pytest.mark.parametrize("op", ["get", "stat"])
async def test_chunk_file_shorter_than_header(tmp_path: Path, op: str) -> None:
    async with blob_node(tmp_path) as served:
        client = BlobClient(SECRET)
        cid, data, path = await put_chunk(client, served, 1000)
        path.write_bytes(path.read_bytes()[:10])
        code = None
        try:
            if op == "get":
                await client.get(served.addr, cid)
            else:
                await client.stat(served.addr, cid)
        except wire.WireError as exc:
            code = exc.code
        problem = await server_problem(served)
    assert code == wire.ERR_CHECKSUM, f"{op} of a 10-byte chunk file answered {code!r} ({problem})"
    assert problem is None, problem


@pytest.mark.parametrize("damage", ["body", "magic"])
async def test_re_put_repairs_a_damaged_copy(tmp_path: Path, damage: str) -> None:
    async with blob_node(tmp_path) as served:
        client = BlobClient(SECRET)
        cid, data, path = await put_chunk(client, served, 10_000)
        if damage == "body":
            rot(served.store, cid)
        else:
            path.write_bytes(b"NOTCAIRN" + path.read_bytes()[8:])
        try:
            created: bool | str = await client.put(served.addr, cid, checksum(data), data)
        except wire.WireError as exc:
            created = exc.code
        stored = path.read_bytes()[HEADER_SIZE:]
    assert created is True, f"re-put over a damaged copy answered {created!r}"
    assert stored == data


def test_full_disk_refuses_cleanly(tmp_path: Path) -> None:
    """On a real 4 MiB tmpfs: a put past the reserve is refused before writing, a put that
    meets ENOSPC mid-write is refused too; neither leaves a file behind, and chunks stored
    before still read back."""
    import subprocess


    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        kept, data = new_id(), os.urandom(100_000)
        store = ChunkStore(str(disk), reserve=1 * MiB)
        assert store.put(kept, checksum(data), data)
        big = os.urandom(3 * MiB)
        with pytest.raises(StoreError) as refused:  # would eat into the reserve
            store.put(new_id(), checksum(big), big)
        assert refused.value.code == wire.ERR_NO_SPACE
        store.reserve = 0
        huge = os.urandom(5 * MiB)
        with pytest.raises(StoreError) as enospc:  # a real ENOSPC halfway through
            store.put(new_id(), checksum(huge), huge)
        assert enospc.value.code == wire.ERR_NO_SPACE
        assert list((disk / "tmp").iterdir()) == []
        assert store.count == 1 and bytes(store.read(kept)[2]) == data
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ------------------------------------------------------------------------ restart


async def test_reopen_sees_chunks_keeps_node_id_and_empties_tmp(tmp_path: Path) -> None:
    chunks = {new_id(): os.urandom(n) for n in (0, 10, 70_000, MiB)}
    async with blob_node(tmp_path) as served:
        client = BlobClient(SECRET)
        for cid, data in chunks.items():
            await client.put(served.addr, cid, checksum(data), data)
        first_id = served.store.node_id
        used, count = served.store.used, served.store.count
    assert (used, count) == (sum(map(len, chunks.values())), 4)

    # a crash mid-write leaves files in tmp/
    (tmp_path / "tmp" / f"{new_id()}.deadbeef").write_bytes(b"partial")
    (tmp_path / "tmp" / "subdir").mkdir()
    (tmp_path / "tmp" / "subdir" / "x").write_bytes(b"y")

    async with blob_node(tmp_path) as served:
        store = served.store
        assert store.node_id == first_id
        assert (store.used, store.count) == (used, count)
        assert list((tmp_path / "tmp").iterdir()) == []
        client = BlobClient(SECRET)
        info = await client.info(served.addr)
        assert (info["node_id"], info["used"], info["chunks"]) == (first_id, used, count)
        for cid, data in chunks.items():
            _, got = await client.get(served.addr, cid)
            assert bytes(got) == data
        assert await client.list_all(served.addr) == sorted(chunks)

    assert ChunkStore(str(tmp_path)).node_id == first_id
    assert ChunkStore(str(tmp_path / "other")).node_id != first_id


# ------------------------------------------------------------------------ the store's readers and writers


def test_writers_and_readers_give_back_what_they_take(tmp_path: Path) -> None:
    """A writer's memory goes back to the pool, committed or not; a reader serves a small
    range as bytes and a large one with sendfile; none of them leaves a descriptor open."""
    store = ChunkStore(str(tmp_path))
    open_fds = len(os.listdir("/proc/self/fd"))
    small_id, small = new_id(), os.urandom(1000)
    big_id, big = new_id(), os.urandom(SENDFILE_MIN + 4097)
    for cid, data in ((small_id, small), (big_id, big)):
        with store.writer(len(data)) as writer:
            writer.memory[:] = data
            assert writer.commit(cid, checksum(data)) is True
    with store.writer(10) as writer:  # abandoned, as by a client gone mid-payload
        pass
    assert len(store.buffers._idle) == 1 and tmp_files(tmp_path) == []

    with store.open_for_send(small_id, 10, 20) as reader:
        assert (reader.size, reader.checksum.value, reader.length, reader.data) == (1000, checksum(small), 20, small[10:30])
    with store.open_for_send(big_id, 1) as reader:
        assert (reader.size, reader.length, reader.data) == (len(big), len(big) - 1, None)
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.setblocking(False)
            got = bytearray()

            def receive() -> None:
                while len(got) < reader.length:
                    got.extend(theirs.recv(65536))

            receiver = threading.Thread(target=receive)
            receiver.start()
            reader.send_to(ours.fileno())
            receiver.join(10)
        assert bytes(got) == big[1:]
    with pytest.raises(StoreError) as err:
        store.reader(new_id())
    assert err.value.code == wire.ERR_NOT_FOUND
    assert len(os.listdir("/proc/self/fd")) == open_fds
