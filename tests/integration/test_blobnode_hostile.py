"""A blob node against clients that get things wrong or mean harm: invalid chunk ids,
unknown ops and oversized puts, the wrong secret, framing garbage, undecodable headers,
hang-ups mid-payload. Each is refused, nothing partial is stored, and the server keeps
serving (``assert_alive``).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest
import trio

from blobnode.client import BlobClient
from blobnode.server import MAX_CHUNK
from core import wire
from tests.integration.blobnodes import (
    SECRET,
    MiB,
    assert_alive,
    assert_no_partial_chunk,
    blob_node,
    checksum,
    chunk_files,
    files_under,
    new_id,
    raw_connect,
    server_problem,
    tmp_files,
    until_closed,
)

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
    async with blob_node(root) as served:
        client = BlobClient(SECRET)
        data = b"escape"
        for bad in [*BAD_IDS, 12345, None, ["a" * 32]]:
            calls = [
                partial(client.put, served.addr, bad, checksum(data), data),
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


async def test_chunk_id_with_trailing_newline_refused(tmp_path: Path) -> None:
    async with blob_node(tmp_path) as served:
        client = BlobClient(SECRET)
        bad, data = "0" * 32 + "\n", b"x"
        try:
            await client.put(served.addr, bad, checksum(data), data)
            code = None
        except wire.WireError as exc:
            code = exc.code
        stored = [p.name for p in chunk_files(tmp_path)]
    assert code == wire.ERR_BAD_REQUEST, f"put of id {bad!r} answered {code!r}; files stored: {stored!r}"
    assert stored == []


# ------------------------------------------------------------------------ requests the protocol refuses


async def test_unknown_op_and_oversized_put(tmp_path: Path) -> None:
    async with blob_node(tmp_path) as served:
        conn = await raw_connect(served.addr)
        await conn.send({"op": "frobnicate", "n": 3}, b"xyz")
        reply = await conn.recv_header()
        assert reply == {"ok": False, "err": wire.ERR_BAD_REQUEST, "msg": "unknown op 'frobnicate'"}
        # an oversized chunk is read and thrown away; the connection stays in sync
        big = bytes(MAX_CHUNK + 1)
        await conn.send({"op": "put", "id": new_id(), "checksum": checksum(big), "n": len(big)}, big)
        del big
        reply = await conn.recv_header()
        assert reply["ok"] is False and reply["err"] == wire.ERR_BAD_REQUEST
        await conn.send({"op": "info"})
        reply = await conn.recv_header()
        assert reply["ok"] is True and reply["chunks"] == 0
        conn.close()
        assert_no_partial_chunk(tmp_path)


# ------------------------------------------------------------------------ authentication


async def test_wrong_secret_is_refused_and_can_do_nothing(tmp_path: Path) -> None:
    async with blob_node(tmp_path) as served:
        good = BlobClient(SECRET)
        kept, kept_data = new_id(), os.urandom(100)
        await good.put(served.addr, kept, checksum(kept_data), kept_data)

        bad = BlobClient("not-the-cluster-secret")
        data = os.urandom(100)
        calls = [
            partial(bad.put, served.addr, new_id(), checksum(data), data),
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
        assert await until_closed(conn, 10.0) == b""

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


# ------------------------------------------------------------------------ hostile and broken clients


async def test_garbage_that_the_framing_rejects_does_not_crash_server(tmp_path: Path) -> None:
    async with blob_node(tmp_path) as served:
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
            await until_closed(conn, 10.0)
        # after a successful handshake
        for garbage in (b"\xff\xff\xff\xff", b"\x00\x00\x00\x01\x05"):
            conn = await raw_connect(served.addr)
            await conn.sock.send(garbage)
            await until_closed(conn, 10.0)
        # connect and hang up straight away, or after reading the challenge
        conn = await raw_connect(served.addr, secret=None)
        conn.close()
        conn = await raw_connect(served.addr, secret=None)
        await conn.recv_header()
        conn.close()
        await assert_alive(served)
        assert_no_partial_chunk(tmp_path)


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
    async with blob_node(tmp_path) as served:
        conn = await raw_connect(served.addr, secret=SECRET if authenticated else None)
        await conn.sock.send(garbage)
        await until_closed(conn, 10.0)
        problem = await server_problem(served)
    assert problem is None, problem
    assert_no_partial_chunk(tmp_path)


async def test_disconnect_mid_payload_leaves_no_partial_chunk(tmp_path: Path) -> None:
    async with blob_node(tmp_path) as served:
        for sent in (0, 1, 1000, 3 * MiB):
            data = os.urandom(4 * MiB)
            conn = await raw_connect(served.addr)
            await conn.send({"op": "put", "id": new_id(), "checksum": checksum(data), "n": len(data)})
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
