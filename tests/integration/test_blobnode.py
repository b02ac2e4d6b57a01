"""In-process tests of a blob node: a real ``BlobServer`` on a loopback socket, driven by
``BlobClient`` (and, for the hostile cases, by raw framed sockets).

Every server runs inside the test's own nursery through ``trio.serve_tcp``; a handler
exception that would take the whole server down is caught by ``Served._run`` and
recorded in ``Served.crash`` so that a test can assert the server survived.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import trio

from blobnode.client import BlobClient
from blobnode.server import MAX_CHUNK, BlobServer
from blobnode.store import HEADER_SIZE, MAGIC, ChunkStore
from core import wire

SECRET = "test-cluster-secret"
MiB = 1024 * 1024


# ------------------------------------------------------------------------ helpers


@dataclass
class Served:
    """A BlobServer listening on 127.0.0.1:<port>, running in a test nursery."""

    root: Path
    store: ChunkStore
    server: BlobServer
    port: int = 0  # 0: any free port; set to restart a server on the port of an earlier one
    crash: BaseException | None = None
    stopped: trio.Event = field(default_factory=trio.Event)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await trio.serve_tcp(self.server.serve_conn, self.port, host="127.0.0.1", task_status=task_status)
        except Exception as exc:  # a handler exception escaped serve_conn: the server is dead
            self.crash = exc
        finally:
            self.stopped.set()


async def start_blob(nursery: trio.Nursery, root: Path, secret: str = SECRET, port: int = 0) -> Served:
    store = ChunkStore(str(root))
    served = Served(root=root, store=store, server=BlobServer(store, secret), port=port)
    listeners = await nursery.start(served._run)
    served.port = listeners[0].socket.getsockname()[1]
    return served


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def new_id() -> str:
    return uuid.uuid4().hex


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def chunk_files(root: Path) -> list[Path]:
    return files_under(root / "chunks")


def tmp_files(root: Path) -> list[Path]:
    return files_under(root / "tmp")


async def raw_connect(addr: str, secret: str | None = SECRET) -> wire.FramedSocket:
    """A framed socket to ``addr``, authenticated when ``secret`` is given."""
    conn = await wire.connect(addr)
    if secret is not None:
        await wire.client_handshake(conn, secret)
    return conn


async def drain_until_closed(conn: wire.FramedSocket, timeout: float = 10.0) -> bytes:
    """Read everything the server sends until it closes the connection."""
    got = bytearray(conn._buf)
    with trio.fail_after(timeout):
        while True:
            try:
                data = await conn.sock.recv(65536)
            except OSError:  # reset by the peer: closed too
                break
            if not data:
                break
            got += data
    conn.close()
    return bytes(got)


async def server_problem(served: Served) -> str | None:
    """None if the server did not crash and serves a brand-new, well-behaved client; else
    what is wrong."""
    await trio.sleep(0.1)  # let a crash, if any, propagate out of serve_tcp
    if served.crash is not None or served.stopped.is_set():
        return f"the blob server crashed: {served.crash!r}"
    client = BlobClient(SECRET, timeout=10)
    cid, data = new_id(), os.urandom(1000)
    try:
        created = await client.put(served.addr, cid, sha(data), data)
        reply, got = await client.get(served.addr, cid)
        deleted = await client.delete(served.addr, [cid])
    except wire.WireError as exc:
        return f"a new client is not served: {exc!r}"
    if (created, bytes(got), reply["sha256"], deleted) != (True, data, sha(data), 1):
        return "a new client's round trip went wrong"
    return None


async def assert_alive(served: Served) -> None:
    problem = await server_problem(served)
    assert problem is None, problem


def assert_no_partial_chunk(root: Path, allowed: set[str] = frozenset()) -> None:
    assert {p.name for p in chunk_files(root)} <= set(allowed)
    assert tmp_files(root) == []


# ------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("size", [0, 1, 8 * MiB], ids=["0B", "1B", "8MiB"])
async def test_put_get_round_trip(tmp_path: Path, size: int) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        client = BlobClient(SECRET)
        cid, data = new_id(), os.urandom(size)
        assert await client.put(served.addr, cid, sha(data), data) is True
        reply, got = await client.get(served.addr, cid)
        assert bytes(got) == data
        assert reply["size"] == size
        assert reply["sha256"] == sha(data)
        assert reply["n"] == size
        stat = await client.stat(served.addr, cid)
        assert (stat["size"], stat["sha256"]) == (size, sha(data))
        info = await client.info(served.addr)
        assert (info["chunks"], info["used"]) == (1, size)
        nursery.cancel_scope.cancel()


async def test_ranged_get_and_clamping(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        client = BlobClient(SECRET)
        small_id, small = new_id(), os.urandom(1000)
        big_id, big = new_id(), os.urandom(8 * MiB)
        await client.put(served.addr, small_id, sha(small), small)
        await client.put(served.addr, big_id, sha(big), big)

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
            # size and sha256 always describe the whole chunk, not the range
            assert reply["size"] == 1000 and reply["sha256"] == sha(small), (off, length)
            assert reply["n"] == len(expected)

        off, length = 3 * MiB + 7, 2 * MiB + 3
        reply, got = await client.get(served.addr, big_id, off, length)
        assert bytes(got) == big[off : off + length]
        reply, got = await client.get(served.addr, big_id, 8 * MiB - 5, MiB)
        assert bytes(got) == big[-5:]
        assert reply["size"] == 8 * MiB
        nursery.cancel_scope.cancel()


async def test_get_and_stat_missing_chunk(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        client = BlobClient(SECRET)
        for call in (partial(client.get, served.addr, new_id()), partial(client.stat, served.addr, new_id())):
            with pytest.raises(wire.WireError) as err:
                await call()
            assert err.value.code == wire.ERR_NOT_FOUND
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------ integrity


async def test_checksum_mismatch_stores_nothing(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        client = BlobClient(SECRET)
        cid, data = new_id(), os.urandom(100_000)
        wrong = [sha(data[:-1]), "0" * 64, sha(data).upper(), "not-a-sha"]
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
        await client.put(served.addr, cid, sha(data), data)
        other = os.urandom(100)
        with pytest.raises(wire.WireError) as err:
            await client.put(served.addr, cid, sha(data), other)
        assert err.value.code == wire.ERR_CHECKSUM
        _, got = await client.get(served.addr, cid)
        assert bytes(got) == data
        assert tmp_files(tmp_path) == []
        nursery.cancel_scope.cancel()


async def test_idempotent_re_put(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        client = BlobClient(SECRET)
        cid, data = new_id(), os.urandom(4096)
        assert await client.put(served.addr, cid, sha(data), data) is True
        path = served.store.path(cid)
        mtime = os.stat(path).st_mtime_ns
        for _ in range(3):
            assert await client.put(served.addr, cid, sha(data), data) is False
        assert os.stat(path).st_mtime_ns == mtime  # not rewritten
        info = await client.info(served.addr)
        assert (info["chunks"], info["used"]) == (1, 4096)
        assert len(chunk_files(tmp_path)) == 1 and tmp_files(tmp_path) == []
        _, got = await client.get(served.addr, cid)
        assert bytes(got) == data
        nursery.cancel_scope.cancel()


async def test_concurrent_puts_of_same_id_counted_once(tmp_path: Path) -> None:
    """Two writers racing on one chunk id (a frontend retrying a put that timed out while
    the first attempt is still being written). Deterministic: both puts are held right
    before their rename until both have passed the existence check."""
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        store = served.store
        gate = threading.Barrier(2, timeout=10)

        def make_parents(final: str) -> None:
            gate.wait()
            ChunkStore._make_parents(store, final)

        store._make_parents = make_parents  # type: ignore[method-assign]
        cid, data = new_id(), os.urandom(10_000)
        results: list[bool] = []

        async def put() -> None:
            results.append(await BlobClient(SECRET).put(served.addr, cid, sha(data), data))

        async with trio.open_nursery() as puts:
            puts.start_soon(put)
            puts.start_soon(put)
        del store._make_parents
        _, got = await BlobClient(SECRET).get(served.addr, cid)
        info = await BlobClient(SECRET).info(served.addr)
        nursery.cancel_scope.cancel()
    # asserted outside the nursery, so that a failure is an AssertionError, not an ExceptionGroup
    assert sorted(results) == [False, True] or results == [True, True]
    assert len(chunk_files(tmp_path)) == 1 and tmp_files(tmp_path) == []
    assert bytes(got) == data
    assert (info["chunks"], info["used"]) == (1, 10_000), f"counters drifted from disk: {info}, puts {results}"


# ------------------------------------------------------------------------ ids and paths

BAD_IDS = [
    "../../etc/passwd",
    "../" * 10 + "tmp/cairn-escape",
    "/etc/passwd",
    "ab/cd/" + "0" * 26,
    "0123456789ABCDEF0123456789ABCDEF",  # uppercase
    "0123456789abcdef",  # short
    "0123456789abcdef0123456789abcdef0",  # 33 digits
    "0123456789abcdef0123456789abcdeg",  # not hex
    "",
    "..",
    "0123456789abcdef\x000123456789abcde",
]


async def test_invalid_chunk_ids_refused(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "store"
    escape_existed = Path("/tmp/cairn-escape").exists()
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, root)
        client = BlobClient(SECRET)
        data = b"escape"
        for bad in [*BAD_IDS, 12345, None, ["a" * 32]]:
            calls = [
                partial(client.put, served.addr, bad, sha(data), data),
                partial(client.get, served.addr, bad),
                partial(client.stat, served.addr, bad),
                partial(client.delete, served.addr, [bad]),
            ]
            for call in calls:
                with pytest.raises(wire.WireError) as err:
                    await call()
                assert err.value.code == wire.ERR_BAD_REQUEST, (bad, call.func.__name__, err.value)
        # nothing was written anywhere: not in the store, not next to it, not in the parent dirs
        assert chunk_files(root) == [] and tmp_files(root) == []
        assert files_under(tmp_path) == [root / "node_id"]
        assert Path("/tmp/cairn-escape").exists() == escape_existed
        assert {p.name for p in root.iterdir()} == {"chunks", "tmp", "node_id"}
        # the connections stayed usable and the server is fine
        await assert_alive(served)
        nursery.cancel_scope.cancel()


async def test_chunk_id_with_trailing_newline_refused(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        client = BlobClient(SECRET)
        bad, data = "0" * 32 + "\n", b"x"
        try:
            await client.put(served.addr, bad, sha(data), data)
            code = None
        except wire.WireError as exc:
            code = exc.code
        stored = [p.name for p in chunk_files(tmp_path)]
        nursery.cancel_scope.cancel()
    assert code == wire.ERR_BAD_REQUEST, f"put of id {bad!r} answered {code!r}; files stored: {stored!r}"
    assert stored == []


# ------------------------------------------------------------------------ delete, stat, list, info


async def test_delete_counts_and_is_idempotent(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        client = BlobClient(SECRET)
        ids = [new_id() for _ in range(4)]
        for i, cid in enumerate(ids):
            data = os.urandom(100 * (i + 1))
            await client.put(served.addr, cid, sha(data), data)
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
        nursery.cancel_scope.cancel()


async def test_list_pagination(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        client = BlobClient(SECRET)
        # ids sharing first-level and second-level directories, so pages cross and re-enter them
        ids = sorted(f"{i % 3:02x}{i % 4:02x}" + uuid.uuid4().hex[4:] for i in range(50))
        assert len(set(ids)) == 50
        for cid in ids:
            await client.put(served.addr, cid, sha(cid.encode()), cid.encode())

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
        nursery.cancel_scope.cancel()


async def test_list_empty_store(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        assert await BlobClient(SECRET).list(served.addr) == ([], False)
        assert await BlobClient(SECRET).list_all(served.addr) == []
        nursery.cancel_scope.cancel()


async def test_info(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
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
            await client.put(served.addr, new_id(), sha(data), data)
        info = await client.info(served.addr)
        assert (info["used"], info["chunks"]) == (sum(sizes), len(sizes))
        nursery.cancel_scope.cancel()


async def test_on_disk_layout(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        client = BlobClient(SECRET)
        cid, data = "abcd" + uuid.uuid4().hex[4:], os.urandom(12345)
        await client.put(served.addr, cid, sha(data), data)
        path = tmp_path / "chunks" / "ab" / "cd" / cid
        assert chunk_files(tmp_path) == [path]
        assert served.store.path(cid) == str(path)
        raw = path.read_bytes()
        assert HEADER_SIZE == 64 and len(raw) == 64 + len(data)
        assert raw[:8] == MAGIC == b"CAIRNCK1"
        assert struct.unpack(">Q", raw[8:16])[0] == len(data)
        assert raw[16:48] == hashlib.sha256(data).digest()
        assert raw[48:64] == b"\0" * 16
        assert raw[64:] == data
        assert tmp_files(tmp_path) == []
        assert (tmp_path / "node_id").is_file()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("direct", [True, False], ids=["o_direct", "buffered"])
def test_direct_and_buffered_writes_make_the_same_files(tmp_path: Path, direct: bool) -> None:
    """O_DIRECT writes are padded to the block size and cut back: each file is exactly
    header + payload, whatever the size, and a pooled buffer reused for a smaller chunk
    leaves nothing of the bigger one behind."""
    store = ChunkStore(str(tmp_path))
    store.direct = store.direct and direct
    for size in (3 * MiB, 0, 1, 4095, 4096, 4097, 12345, MiB + 1):
        cid, data = new_id(), os.urandom(size)
        assert store.put(cid, sha(data), data) is True
        raw = Path(store.path(cid)).read_bytes()
        assert len(raw) == HEADER_SIZE + size and raw[HEADER_SIZE:] == data
        assert bytes(store.read(cid)[2]) == data and store.verify(cid) == (True, size)
    assert store.direct == (direct and ChunkStore(str(tmp_path)).direct)
    assert tmp_files(tmp_path) == []


async def test_unknown_op_and_oversized_put(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        conn = await raw_connect(served.addr)
        await conn.send({"op": "frobnicate", "n": 3}, b"xyz")
        reply = await conn.recv_header()
        assert reply == {"ok": False, "err": wire.ERR_BAD_REQUEST, "msg": "unknown op 'frobnicate'"}
        # an oversized chunk is read and thrown away; the connection stays in sync
        big = bytes(MAX_CHUNK + 1)
        await conn.send({"op": "put", "id": new_id(), "sha256": sha(big), "n": len(big)}, big)
        del big
        reply = await conn.recv_header()
        assert reply["ok"] is False and reply["err"] == wire.ERR_BAD_REQUEST
        await conn.send({"op": "info"})
        reply = await conn.recv_header()
        assert reply["ok"] is True and reply["chunks"] == 0
        conn.close()
        assert_no_partial_chunk(tmp_path)
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------ authentication


async def test_wrong_secret_is_refused_and_can_do_nothing(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        good = BlobClient(SECRET)
        kept, kept_data = new_id(), os.urandom(100)
        await good.put(served.addr, kept, sha(kept_data), kept_data)

        bad = BlobClient("not-the-cluster-secret")
        data = os.urandom(100)
        calls = [
            partial(bad.put, served.addr, new_id(), sha(data), data),
            partial(bad.get, served.addr, kept),
            partial(bad.stat, served.addr, kept),
            partial(bad.delete, served.addr, [kept]),
            partial(bad.list, served.addr),
            partial(bad.info, served.addr),
        ]
        for call in calls:
            with pytest.raises(wire.WireError) as err:
                await call()
            assert err.value.code == wire.ERR_AUTH, call.func.__name__
        assert bad.pool._idle == {}  # a refused connection is never pooled

        # a client that skips the handshake and sends a request straight away
        conn = await raw_connect(served.addr, secret=None)
        hello = await conn.recv_header()
        assert isinstance(hello["hello"], bytes) and len(hello["hello"]) == 16
        await conn.send({"op": "delete", "ids": [kept]})
        assert await conn.recv_header() == {"ok": False, "err": wire.ERR_AUTH, "msg": "cluster secret required"}
        assert await drain_until_closed(conn) == b""

        # a proof made with the right secret for another role is refused too
        conn = await raw_connect(served.addr, secret=None)
        hello = await conn.recv_header()
        await conn.send({"proof": wire.auth_proof(SECRET, hello["hello"], "server")})
        assert (await conn.recv_header())["err"] == wire.ERR_AUTH
        conn.close()

        # a replayed proof (for an old nonce) is refused
        conn = await raw_connect(served.addr, secret=None)
        await conn.recv_header()
        await conn.send({"proof": wire.auth_proof(SECRET, hello["hello"], "client")})
        assert (await conn.recv_header())["err"] == wire.ERR_AUTH
        conn.close()

        assert [p.name for p in chunk_files(tmp_path)] == [kept]
        _, got = await good.get(served.addr, kept)
        assert bytes(got) == kept_data
        await assert_alive(served)
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------ hostile and broken clients


async def test_garbage_that_the_framing_rejects_does_not_crash_server(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        variants = [
            b"\xff\xff\xff\xff" + os.urandom(1000),  # header length > MAX_HEADER, before auth
            b"\x00\x00\x00\x03\x92\x01\x02",  # a header that is valid msgpack but not a map, before auth
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # 'GET ' read as a huge length
            b"\x00\x00",  # half a length prefix, then EOF
            b"\x00\x00\x00\x40" + b"\x80",  # a promised 64-byte header, 1 byte, then EOF
        ]
        for garbage in variants:
            conn = await raw_connect(served.addr, secret=None)
            await conn.sock.send(garbage)
            if garbage in (b"\x00\x00", b"\x00\x00\x00\x40\x80"):
                conn.sock.shutdown(trio.socket.SHUT_WR)
            await drain_until_closed(conn)
        # after a successful handshake
        for garbage in (b"\xff\xff\xff\xff", b"\x00\x00\x00\x01\x05"):
            conn = await raw_connect(served.addr)
            await conn.sock.send(garbage)
            await drain_until_closed(conn)
        # connect and hang up straight away, or after reading the challenge
        conn = await raw_connect(served.addr, secret=None)
        conn.close()
        conn = await raw_connect(served.addr, secret=None)
        await conn.recv_header()
        conn.close()
        await assert_alive(served)
        assert_no_partial_chunk(tmp_path)
        nursery.cancel_scope.cancel()


UNDECODABLE = {
    "pre-auth-not-msgpack": (False, b"\x00\x00\x00\x05hello"),  # msgpack ExtraData (a ValueError)
    "pre-auth-bad-utf8": (False, b"\x00\x00\x00\x04\x81\xa1\xff\x01"),  # {"\xff": 1}: UnicodeDecodeError
    "pre-auth-proof-not-bytes": (False, wire.pack({"proof": "a string"})),  # hmac.compare_digest TypeError
    "post-auth-not-msgpack": (True, b"\x00\x00\x00\x05hello"),
    "post-auth-reserved-byte": (True, b"\x00\x00\x00\x01\xc1"),  # 0xc1 is never valid msgpack
}


@pytest.mark.parametrize("name", list(UNDECODABLE))
async def test_undecodable_header_does_not_crash_server(tmp_path: Path, name: str) -> None:
    authenticated, garbage = UNDECODABLE[name]
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        conn = await raw_connect(served.addr, secret=SECRET if authenticated else None)
        await conn.sock.send(garbage)
        await drain_until_closed(conn)
        problem = await server_problem(served)
        nursery.cancel_scope.cancel()
    assert problem is None, problem
    assert_no_partial_chunk(tmp_path)


async def test_disconnect_mid_payload_leaves_no_partial_chunk(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        for sent in (0, 1, 1000, 3 * MiB):
            data = os.urandom(4 * MiB)
            conn = await raw_connect(served.addr)
            await conn.send({"op": "put", "id": new_id(), "sha256": sha(data), "n": len(data)})
            if sent:
                await conn._send_all(memoryview(data)[:sent])
            conn.close()
        # a half-sent put header
        conn = await raw_connect(served.addr)
        await conn.sock.send(wire.pack({"op": "put", "id": new_id(), "sha256": "0" * 64, "n": 10})[:7])
        conn.close()
        await trio.sleep(0.2)
        assert_no_partial_chunk(tmp_path)
        await assert_alive(served)
        assert_no_partial_chunk(tmp_path)
        nursery.cancel_scope.cancel()


async def test_concurrent_puts_on_separate_connections(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        chunks = {new_id(): os.urandom(MiB + i) for i in range(12)}
        created: dict[str, bool] = {}

        async def put(cid: str, data: bytes) -> None:
            created[cid] = await BlobClient(SECRET).put(served.addr, cid, sha(data), data)

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
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------ restart


async def test_reopen_sees_chunks_keeps_node_id_and_empties_tmp(tmp_path: Path) -> None:
    chunks = {new_id(): os.urandom(n) for n in (0, 10, 70_000, MiB)}
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        client = BlobClient(SECRET)
        for cid, data in chunks.items():
            await client.put(served.addr, cid, sha(data), data)
        first_id = served.store.node_id
        used, count = served.store.used, served.store.count
        nursery.cancel_scope.cancel()
    assert (used, count) == (sum(map(len, chunks.values())), 4)

    # a crash mid-write leaves files in tmp/
    (tmp_path / "tmp" / f"{new_id()}.deadbeef").write_bytes(b"partial")
    (tmp_path / "tmp" / "subdir").mkdir()
    (tmp_path / "tmp" / "subdir" / "x").write_bytes(b"y")

    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
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
        nursery.cancel_scope.cancel()

    assert ChunkStore(str(tmp_path)).node_id == first_id
    assert ChunkStore(str(tmp_path / "other")).node_id != first_id


async def test_pooled_connection_to_restarted_server_is_replaced(tmp_path: Path) -> None:
    """The client's idle pooled connection dies with the server; the next request (a blob
    node restarted on the same port) is sent again on a new connection."""
    client = BlobClient(SECRET)
    cid, data = new_id(), os.urandom(5000)
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        port = served.port
        await client.put(served.addr, cid, sha(data), data)
        assert len(client.pool._idle[served.addr]) == 1
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path, port=port)
        stale = client.pool._idle[served.addr][0]
        reply, got = await client.get(served.addr, cid)
        assert bytes(got) == data and reply["sha256"] == sha(data)
        assert client.pool._idle[served.addr] != [stale] and len(client.pool._idle[served.addr]) == 1
        assert (await client.stat(served.addr, cid))["size"] == 5000
        nursery.cancel_scope.cancel()
    # no server at all: a clean Unavailable, not a hang or an OSError
    with pytest.raises(wire.WireError) as err:
        await client.get(f"127.0.0.1:{port}", cid)
    assert err.value.code == wire.ERR_UNAVAILABLE


# ------------------------------------------------------------------------ damaged chunk files


async def test_damaged_chunk_files_on_disk(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        client = BlobClient(SECRET)
        flipped, cut, magic = new_id(), new_id(), new_id()
        data = os.urandom(10_000)
        for cid in (flipped, cut, magic):
            await client.put(served.addr, cid, sha(data), data)

        # a flipped byte in the body: returned as stored, with the sha256 of the original
        path = Path(served.store.path(flipped))
        raw = bytearray(path.read_bytes())
        raw[HEADER_SIZE + 5000] ^= 0xFF
        path.write_bytes(raw)
        reply, got = await client.get(served.addr, flipped)
        assert bytes(got) == bytes(raw[HEADER_SIZE:]) != data
        assert reply["sha256"] == sha(data) != sha(got)
        assert reply["size"] == 10_000
        assert (await client.stat(served.addr, flipped))["sha256"] == sha(data)

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
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("op", ["get", "stat"])
async def test_chunk_file_shorter_than_header(tmp_path: Path, op: str) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        client = BlobClient(SECRET)
        cid, data = new_id(), os.urandom(1000)
        await client.put(served.addr, cid, sha(data), data)
        path = Path(served.store.path(cid))
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
        nursery.cancel_scope.cancel()
    assert code == wire.ERR_CHECKSUM, f"{op} of a 10-byte chunk file answered {code!r} ({problem})"
    assert problem is None, problem


@pytest.mark.parametrize("damage", ["body", "magic"])
async def test_re_put_repairs_a_damaged_copy(tmp_path: Path, damage: str) -> None:
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        client = BlobClient(SECRET)
        cid, data = new_id(), os.urandom(10_000)
        await client.put(served.addr, cid, sha(data), data)
        path = Path(served.store.path(cid))
        raw = bytearray(path.read_bytes())
        if damage == "body":
            raw[HEADER_SIZE + 10] ^= 0xFF
        else:
            raw[:8] = b"NOTCAIRN"
        path.write_bytes(raw)
        try:
            created: bool | str = await client.put(served.addr, cid, sha(data), data)
        except wire.WireError as exc:
            created = exc.code
        stored = path.read_bytes()[HEADER_SIZE:]
        nursery.cancel_scope.cancel()
    assert created is True, f"re-put over a damaged copy answered {created!r}"
    assert stored == data


def test_full_disk_refuses_cleanly(tmp_path: Path) -> None:
    """On a real 4 MiB tmpfs: a put past the reserve is refused before writing, a put that
    meets ENOSPC mid-write is refused too; neither leaves a file behind, and chunks stored
    before still read back."""
    import subprocess

    from blobnode.store import StoreError

    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        kept, data = new_id(), os.urandom(100_000)
        store = ChunkStore(str(disk), reserve=1 * MiB)
        assert store.put(kept, sha(data), data)
        big = os.urandom(3 * MiB)
        with pytest.raises(StoreError) as refused:  # would eat into the reserve
            store.put(new_id(), sha(big), big)
        assert refused.value.code == wire.ERR_NO_SPACE
        store.reserve = 0
        huge = os.urandom(5 * MiB)
        with pytest.raises(StoreError) as enospc:  # a real ENOSPC halfway through
            store.put(new_id(), sha(huge), huge)
        assert enospc.value.code == wire.ERR_NO_SPACE
        assert list((disk / "tmp").iterdir()) == []
        assert store.count == 1 and bytes(store.read(kept)[2]) == data
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ------------------------------------------------------------------------ the scrubber's reports


class FlakyMeta:
    """Stands in for the blob node's MetaClient (not under test here): ``write`` fails as
    the real one does when no raftmeta node answers (WireError Unavailable) while
    ``down``, and acknowledges like raftmeta does once it is up."""

    def __init__(self, down: bool = True) -> None:
        self.down = down
        self.attempts: list[tuple[float, dict]] = []
        self.delivered: list[dict] = []

    async def write(self, cmd: dict, deadline: float = 20.0) -> dict:
        self.attempts.append((trio.current_time(), cmd))
        await trio.sleep(0)
        if self.down:
            raise wire.WireError(wire.ERR_UNAVAILABLE, "no raftmeta node answered")
        self.delivered.append(cmd)
        return {"ok": True, "objects": len(cmd["chunks"])}

    def lost(self) -> list[str]:
        return sorted(c for cmd in self.delivered for c in cmd["chunks"])


def rot(store: ChunkStore, chunk_id: str) -> None:
    """Flip a byte in a stored chunk's body, as bit rot would."""
    path = Path(store.path(chunk_id))
    raw = bytearray(path.read_bytes())
    raw[HEADER_SIZE + 10] ^= 0xFF
    path.write_bytes(raw)


def stored(store: ChunkStore, n: int, size: int = 5000) -> list[str]:
    ids = sorted(new_id() for _ in range(n))
    for cid in ids:
        data = os.urandom(size)
        store.put(cid, sha(data), data)
    return ids


async def test_failed_scrub_report_is_retried_with_backoff_until_acknowledged(tmp_path: Path) -> None:
    from blobnode.scrub import Scrubber

    store = ChunkStore(str(tmp_path))
    good, bad = stored(store, 2), stored(store, 2)
    for cid in bad:
        rot(store, cid)
    meta = FlakyMeta(down=True)
    scrubber = Scrubber(store, meta, rate_mb_s=1000, interval=3600, retry_first=0.2, retry_max=5)  # type: ignore[arg-type]

    assert await scrubber.scrub_pass() == 2
    assert sorted(p.name for p in (tmp_path / "quarantine").iterdir()) == bad
    assert {p.name for p in chunk_files(tmp_path)} == set(good)
    assert len(meta.attempts) == 1 and meta.delivered == []
    assert sorted(scrubber.unreported) == bad and scrubber.stats["unreported"] == 2

    # a pass inside the backoff window finds nothing new and does not hammer raftmeta
    assert await scrubber.scrub_pass() == 0
    assert len(meta.attempts) == 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(scrubber._idle, 3600)  # the wait between passes of ``run``
        with trio.fail_after(10):
            while len(meta.attempts) < 4:
                await trio.sleep(0.01)
        meta.down = False  # raftmeta is back
        with trio.fail_after(10):
            while not meta.delivered:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()

    times = [t for t, _ in meta.attempts]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(later > earlier * 1.5 for earlier, later in zip(gaps[:3], gaps[1:3], strict=False)), gaps
    assert meta.lost() == bad
    cmd = meta.delivered[0]
    assert cmd["op"] == "replicas_lost" and cmd["node"] == store.node_id
    assert scrubber.unreported == {} and scrubber.stats["unreported"] == 0

    # acknowledged: neither a later pass nor a restarted node reports them again
    assert await scrubber.scrub_pass() == 0
    restarted = Scrubber(ChunkStore(str(tmp_path)), meta, rate_mb_s=1000, interval=3600)  # type: ignore[arg-type]
    assert await restarted.scrub_pass() == 0
    assert len(meta.delivered) == 1
    assert sorted(p.name for p in (tmp_path / "quarantine").iterdir()) == bad  # kept for inspection


async def test_unacknowledged_scrub_report_survives_a_restart(tmp_path: Path) -> None:
    from blobnode.scrub import Scrubber

    store = ChunkStore(str(tmp_path))
    (bad,) = stored(store, 1)
    stored(store, 3)
    rot(store, bad)
    down = FlakyMeta(down=True)
    first = Scrubber(store, down, rate_mb_s=1000, interval=3600)  # type: ignore[arg-type]
    assert await first.scrub_pass() == 1
    assert down.delivered == [] and list(first.unreported) == [bad]
    del first  # the blob node dies with its report undelivered

    up = FlakyMeta(down=False)
    second = Scrubber(ChunkStore(str(tmp_path)), up, rate_mb_s=1000, interval=3600)  # type: ignore[arg-type]
    assert await second.scrub_pass() == 0  # nothing newly corrupt, but the old loss goes out
    assert up.lost() == [bad]
    assert second.unreported == {}

    third = Scrubber(ChunkStore(str(tmp_path)), up, rate_mb_s=1000, interval=3600)  # type: ignore[arg-type]
    assert await third.flush_reports() is True
    assert await third.scrub_pass() == 0
    assert len(up.delivered) == 1  # acknowledged once, not reported on every start


async def test_quarantined_chunk_held_again_is_not_reported_and_a_second_rot_is(tmp_path: Path) -> None:
    """Repair may place a fresh copy of a chunk on the node that quarantined it (after a GET
    dropped that replica): reporting the old loss then would drop the good copy. If that
    copy rots too, it is a new loss and is reported."""
    from blobnode.scrub import Scrubber

    store = ChunkStore(str(tmp_path))
    data = os.urandom(5000)
    cid = new_id()
    store.put(cid, sha(data), data)
    rot(store, cid)
    down = FlakyMeta(down=True)
    assert await Scrubber(store, down, rate_mb_s=1000, interval=3600).scrub_pass() == 1  # type: ignore[arg-type]
    assert store.put(cid, sha(data), data)  # the repaired copy arrives while the report is pending

    up = FlakyMeta(down=False)
    scrubber = Scrubber(ChunkStore(str(tmp_path)), up, rate_mb_s=1000, interval=3600)  # type: ignore[arg-type]
    assert await scrubber.scrub_pass() == 0
    assert up.delivered == [] and scrubber.unreported == {}

    rot(scrubber.store, cid)
    assert await scrubber.scrub_pass() == 1
    assert up.lost() == [cid]
    again = Scrubber(ChunkStore(str(tmp_path)), up, rate_mb_s=1000, interval=3600)  # type: ignore[arg-type]
    assert await again.scrub_pass() == 0
    assert len(up.delivered) == 1


# ------------------------------------------------------------------------ the frontend's read path


@pytest.mark.parametrize("size", [3 * MiB + 7, 100_000], ids=["3MiB+7", "100kB"])
async def test_payload_received_and_consumed_in_a_worker_thread(tmp_path: Path, size: int) -> None:
    """A reply payload received by a worker thread (the frontend's chunk reads): it lands
    in the caller's buffer, stale bytes of a bigger chunk there are no problem, and the
    consumer sees every byte once, in order, in steps while it arrives."""
    async with trio.open_nursery() as nursery:
        served = await start_blob(nursery, tmp_path)
        client = BlobClient(SECRET)
        cid, data = new_id(), os.urandom(size)
        await client.put(served.addr, cid, sha(data), data)
        stale = bytearray(os.urandom(4 * MiB))
        steps: list[int] = []
        hasher = hashlib.sha256()
        loop_thread = threading.get_ident()

        def consume(view: memoryview) -> None:
            assert threading.get_ident() != loop_thread
            steps.append(len(view))
            hasher.update(view)

        _reply, got = await client.get(served.addr, cid, into=lambda n: memoryview(stale)[:n], consume=consume)
        assert got.obj is stale and bytes(got) == data
        assert hasher.hexdigest() == sha(data) and sum(steps) == size
        assert len(steps) >= (2 if size > 2 * wire.CONSUME_STEP else 1)
        nursery.cancel_scope.cancel()


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
