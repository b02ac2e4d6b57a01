"""The chunk protocol of a blob node, end to end: a real ``BlobServer`` on a loopback
socket (``tests.integration.blobnodes``) driven by ``BlobClient``: put, get with
ranges, stat, delete, list, info, concurrent clients, pooled connections, and the
frontend's threaded receipt of a chunk.
"""

from __future__ import annotations

import os
import threading
import uuid
from functools import partial
from pathlib import Path

import pytest
import trio

from blobnode.client import BlobClient
from core import chunksum, wire
from tests.integration.blobnodes import (
    SECRET,
    MiB,
    blob_node,
    checksum,
    chunk_files,
    new_id,
    tmp_files,
)

# ------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("size", [0, 1, 8 * MiB], ids=["0B", "1B", "8MiB"])
async def test_put_get_round_trip(tmp_path: Path, size: int) -> None:
    async with blob_node(tmp_path) as served:
        client = BlobClient(SECRET)
        cid, data = new_id(), os.urandom(size)
        assert await client.put(served.addr, cid, checksum(data), data) is True
        reply, got = await client.get(served.addr, cid)
        assert bytes(got) == data
        assert reply["size"] == size
        assert reply["checksum"] == checksum(data)
        assert reply["n"] == size
        stat = await client.stat(served.addr, cid)
        assert (stat["size"], stat["checksum"]) == (size, checksum(data))
        info = await client.info(served.addr)
        assert (info["chunks"], info["used"]) == (1, size)


async def test_ranged_get_and_clamping(tmp_path: Path) -> None:
    async with blob_node(tmp_path) as served:
        client = BlobClient(SECRET)
        small_id, small = new_id(), os.urandom(1000)
        big_id, big = new_id(), os.urandom(8 * MiB)
        await client.put(served.addr, small_id, checksum(small), small)
        await client.put(served.addr, big_id, checksum(big), big)

        cases = [
            ((0, 10), small[0:10]),
            ((10, 20), small[10:30]),
            ((990, 10), small[990:1000]),
            ((995, 100), small[995:]),  # length clamped to the end
            ((999, None), small[999:]),
            ((500, None), small[500:]),
            ((0, None), small),
            ((1000, 10), b""),  # offset exactly at the end
            ((5000, 10), b""),  # offset past the end
            ((5000, None), b""),
            ((0, 0), b""),
            ((0, 10**9), small),
        ]
        for (off, length), expected in cases:
            reply, got = await client.get(served.addr, small_id, off, length)
            assert bytes(got) == expected, (off, length)
            # size and checksum always describe the whole chunk, not the range
            assert reply["size"] == 1000 and reply["checksum"] == checksum(small), (off, length)
            assert reply["n"] == len(expected)

        off, length = 3 * MiB + 7, 2 * MiB + 3
        reply, got = await client.get(served.addr, big_id, off, length)
        assert bytes(got) == big[off : off + length]
        reply, got = await client.get(served.addr, big_id, 8 * MiB - 5, MiB)
        assert bytes(got) == big[-5:]
        assert reply["size"] == 8 * MiB


async def test_get_and_stat_missing_chunk(tmp_path: Path) -> None:
    async with blob_node(tmp_path) as served:
        client = BlobClient(SECRET)
        for call in (partial(client.get, served.addr, new_id()), partial(client.stat, served.addr, new_id())):
            with pytest.raises(wire.WireError) as err:
                await call()
            assert err.value.code == wire.ERR_NOT_FOUND


# ------------------------------------------------------------------------ delete, stat, list, info


async def test_delete_counts_and_is_idempotent(tmp_path: Path) -> None:
    async with blob_node(tmp_path) as served:
        client = BlobClient(SECRET)
        ids = [new_id() for _ in range(4)]
        for i, cid in enumerate(ids):
            data = os.urandom(100 * (i + 1))
            await client.put(served.addr, cid, checksum(data), data)
        info = await client.info(served.addr)
        assert (info["chunks"], info["used"]) == (4, 1000)

        assert await client.delete(served.addr, ids[:2]) == 2
        assert await client.delete(served.addr, ids[:2]) == 0  # idempotent
        assert await client.delete(served.addr, [ids[0], ids[2], new_id()]) == 1
        assert await client.delete(served.addr, []) == 0
        info = await client.info(served.addr)
        assert (info["chunks"], info["used"]) == (1, 400)
        assert [p.name for p in chunk_files(tmp_path)] == [ids[3]]
        for cid in ids[:3]:
            with pytest.raises(wire.WireError) as err:
                await client.stat(served.addr, cid)
            assert err.value.code == wire.ERR_NOT_FOUND
        assert (await client.stat(served.addr, ids[3]))["size"] == 400


async def test_list_pagination(tmp_path: Path) -> None:
    async with blob_node(tmp_path) as served:
        client = BlobClient(SECRET)
        # ids sharing first-level and second-level directories, so pages cross and re-enter them
        ids = sorted(f"{i % 3:02x}{i % 4:02x}" + uuid.uuid4().hex[4:] for i in range(50))
        assert len(set(ids)) == 50
        for cid in ids:
            await client.put(served.addr, cid, checksum(cid.encode()), cid.encode())

        for limit in (1, 7, 10, 49):
            pages: list[list[str]] = []
            after, more = "", True
            while more:
                page, more = await client.list(served.addr, after, limit)
                assert 0 < len(page) <= limit
                assert len(page) == limit or not more
                pages.append(page)
                after = page[-1]
            assert [cid for page in pages for cid in page] == ids, limit
            assert len(pages) == -(-50 // limit)

        assert await client.list(served.addr, "", 50) == (ids, False)
        assert await client.list(served.addr, "", 1000) == (ids, False)
        assert await client.list(served.addr, "", 49) == (ids[:49], True)
        assert await client.list(served.addr, ids[-1], 10) == ([], False)
        assert await client.list(served.addr, ids[24], 1000) == (ids[25:], False)
        # `after` need not be a stored id
        between = ids[9][:-1] + chr(ord(ids[9][-1]) + 1) if ids[9][-1] != "f" else ids[9] + "0"
        assert (await client.list(served.addr, between, 1000))[0] == [c for c in ids if c > between]
        assert await client.list(served.addr, "ff", 10) == ([c for c in ids if c > "ff"], False)
        assert await client.list_all(served.addr) == ids


async def test_list_empty_store(tmp_path: Path) -> None:
    async with blob_node(tmp_path) as served:
        assert await BlobClient(SECRET).list(served.addr) == ([], False)
        assert await BlobClient(SECRET).list_all(served.addr) == []


async def test_info(tmp_path: Path) -> None:
    async with blob_node(tmp_path) as served:
        client = BlobClient(SECRET)
        info = await client.info(served.addr)
        assert info["ok"] is True
        assert info["node_id"] == served.store.node_id == (tmp_path / "node_id").read_text().strip()
        assert len(info["node_id"]) == 12
        assert info["capacity"] > 0 and 0 <= info["free"] <= info["capacity"]
        assert (info["used"], info["chunks"]) == (0, 0)
        sizes = [0, 1, 5000, MiB]
        for size in sizes:
            data = os.urandom(size)
            await client.put(served.addr, new_id(), checksum(data), data)
        info = await client.info(served.addr)
        assert (info["used"], info["chunks"]) == (sum(sizes), len(sizes))


# ------------------------------------------------------------------------ concurrency and connections


async def test_concurrent_puts_on_separate_connections(tmp_path: Path) -> None:
    async with blob_node(tmp_path) as served:
        chunks = {new_id(): os.urandom(MiB + i) for i in range(12)}
        created: dict[str, bool] = {}

        async def put(cid: str, data: bytes) -> None:
            created[cid] = await BlobClient(SECRET).put(served.addr, cid, checksum(data), data)

        async with trio.open_nursery() as puts:
            for cid, data in chunks.items():
                puts.start_soon(put, cid, data)
        assert created == dict.fromkeys(chunks, True)

        async def check(cid: str, data: bytes) -> None:
            _, got = await BlobClient(SECRET).get(served.addr, cid)
            assert bytes(got) == data

        async with trio.open_nursery() as gets:
            for cid, data in chunks.items():
                gets.start_soon(check, cid, data)
        info = await BlobClient(SECRET).info(served.addr)
        assert (info["chunks"], info["used"]) == (12, sum(len(d) for d in chunks.values()))
        assert sorted(p.name for p in chunk_files(tmp_path)) == sorted(chunks)
        assert tmp_files(tmp_path) == []


async def test_pooled_connection_to_restarted_server_is_replaced(tmp_path: Path) -> None:
    """The client's idle pooled connection dies with the server; the next request (a blob
    node restarted on the same port) is sent again on a new connection."""
    client = BlobClient(SECRET)
    cid, data = new_id(), os.urandom(5000)
    async with blob_node(tmp_path) as served:
        port = served.port
        await client.put(served.addr, cid, checksum(data), data)
        assert len(client.pool._idle[served.addr]) == 1
    async with blob_node(tmp_path, port=port) as served:
        stale = client.pool._idle[served.addr][0]
        reply, got = await client.get(served.addr, cid)
        assert bytes(got) == data and reply["checksum"] == checksum(data)
        assert client.pool._idle[served.addr] != [stale] and len(client.pool._idle[served.addr]) == 1
        assert (await client.stat(served.addr, cid))["size"] == 5000
    # no server at all: a clean Unavailable, not a hang or an OSError
    with pytest.raises(wire.WireError) as err:
        await client.get(f"127.0.0.1:{port}", cid)
    assert err.value.code == wire.ERR_UNAVAILABLE


# ------------------------------------------------------------------------ the frontend's read path


@pytest.mark.parametrize("size", [3 * MiB + 7, 100_000], ids=["3MiB+7", "100kB"])
async def test_payload_received_and_consumed_in_a_worker_thread(tmp_path: Path, size: int) -> None:
    """A reply payload received by a worker thread (the frontend's chunk reads): it lands
    in the caller's buffer, stale bytes of a bigger chunk there are no problem, and the
    consumer sees every byte once, in order, in steps while it arrives."""
    async with blob_node(tmp_path) as served:
        client = BlobClient(SECRET)
        cid, data = new_id(), os.urandom(size)
        await client.put(served.addr, cid, checksum(data), data)
        stale = bytearray(os.urandom(4 * MiB))
        steps: list[int] = []
        expected = chunksum.parse(checksum(data))
        hasher = expected.hasher()
        loop_thread = threading.get_ident()

        def consume(view: memoryview) -> None:
            assert threading.get_ident() != loop_thread
            steps.append(len(view))
            hasher.update(view)

        _reply, got = await client.get(served.addr, cid, into=lambda n: memoryview(stale)[:n], consume=consume)
        assert got.obj is stale and bytes(got) == data
        assert expected.matched(hasher) and sum(steps) == size
        assert len(steps) >= (2 if size > 2 * wire.CONSUME_STEP else 1)


async def test_threaded_receive_gives_up_at_the_deadline_and_on_a_cut() -> None:
    """A server that stops sending mid-payload: the worker thread gives up at the
    caller's deadline; one that closes mid-payload: at once. Either is a WireError."""

    async def handle(conn: wire.FramedSocket, header: dict) -> None:
        await conn.send({"ok": True, "n": 2 * MiB}, os.urandom(MiB))  # half of what it announced
        if header["id"] == "stall":
            await trio.sleep(30)
        else:
            conn.sock.shutdown(trio.socket.SHUT_RDWR)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"),
                                        lambda stream: wire.serve_connection(stream, SECRET, handle), 0)
        addr = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        client = BlobClient(SECRET)
        for chunk_id, most in (("stall", 3.0), ("cut", 1.0)):
            started = trio.current_time()
            with pytest.raises(wire.WireError):
                await client.get(addr, chunk_id, timeout=1.0, into=lambda n: memoryview(bytearray(n)),
                                 consume=lambda view: None)
            assert trio.current_time() - started < most
        nursery.cancel_scope.cancel()
