"""The cluster-secret handshake against unauthenticated peers that send too much, send
nonsense, or send nothing: each is refused or dropped early and cheaply, and the server
keeps serving authenticated clients meanwhile.

The server is a real ``BlobServer`` (whose connections go through ``wire.serve_connection``,
as on the raftmeta RPC port) on a loopback socket in the test's nursery; an exception that
escapes a connection handler is recorded in ``Served.crash``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest
import trio

from blobnode.client import BlobClient
from blobnode.server import BlobServer
from blobnode.store import ChunkStore
from core import wire
from tests.integration.blobnodes import until_closed

SECRET = "wire-limits-secret"
REFUSAL = {"ok": False, "err": wire.ERR_AUTH, "msg": "cluster secret required"}


@dataclass
class Served:
    addr: str = ""
    crash: BaseException | None = None


async def start_server(nursery: trio.Nursery, root: Path) -> Served:
    served = Served()
    server = BlobServer(ChunkStore(str(root)), SECRET)

    async def run(*, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await trio.serve_tcp(server.serve_conn, 0, host="127.0.0.1", task_status=task_status)
        except Exception as exc:  # a handler exception escaped: the whole server is gone
            served.crash = exc

    listeners = await nursery.start(run)
    served.addr = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    return served


async def challenged(addr: str) -> wire.FramedSocket:
    """A raw connection that has read the server's challenge and proves nothing."""
    conn = await wire.connect(addr)
    hello = await conn.recv_header()
    assert hello is not None and len(hello["hello"]) == 16
    return conn


async def put_and_get(client: BlobClient, addr: str) -> float:
    """One authenticated put and get; returns the seconds they took."""
    start = time.monotonic()
    data = os.urandom(1000)
    cid = uuid.uuid4().hex
    await client.put(addr, cid, hashlib.sha256(data).hexdigest(), data)
    _, got = await client.get(addr, cid)
    assert bytes(got) == data
    return time.monotonic() - start


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


async def test_oversized_handshake_header_is_refused_unread(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            served = await start_server(nursery, tmp_path)
            client = BlobClient(SECRET, timeout=10)
            await put_and_get(client, served.addr)

            # only the length prefix of a 1 MiB header: refused at once, nothing more awaited
            conn = await challenged(served.addr)
            await conn.sock.send(struct.pack(">I", wire.MAX_HEADER))
            with trio.fail_after(1.5):
                assert await until_closed(conn) == wire.pack(REFUSAL)
            for size in (wire.HANDSHAKE_MAX_HEADER + 1, 0xFFFFFFFF):
                conn = await challenged(served.addr)
                await conn.sock.send(struct.pack(">I", size))
                with trio.fail_after(1.5):
                    assert await until_closed(conn) == wire.pack(REFUSAL)

            # attackers sending whole 1 MiB headers (a million msgpack nils), over and over,
            # while an authenticated client works
            bomb = frame(b"\xdd" + struct.pack(">I", wire.MAX_HEADER - 5) + b"\xc0" * (wire.MAX_HEADER - 5))
            attacks = [0]
            stop = trio.Event()

            async def attacker() -> None:
                while not stop.is_set():
                    conn = await challenged(served.addr)
                    try:
                        await conn.sock.send(bomb[:4])  # the prefix first: the server refuses on it
                        await conn._send_all(memoryview(bomb)[4:])
                    except OSError:
                        pass  # the server closed the connection under the rest of it
                    await until_closed(conn)
                    attacks[0] += 1

            took = []
            async with trio.open_nursery() as attackers:
                for _ in range(4):
                    attackers.start_soon(attacker)
                for _ in range(40):
                    took.append(await put_and_get(client, served.addr))
                    await trio.sleep(0.01)
                stop.set()
            print(f"\n{attacks[0]} oversized handshakes refused; put+get took at most {max(took) * 1000:.1f} ms")
            assert attacks[0] >= 4
            assert served.crash is None, served.crash
            nursery.cancel_scope.cancel()


MALFORMED = {
    "a list": frame(msgpack.packb([1, 2])),
    "an int": frame(msgpack.packb(7)),
    "a string": frame(msgpack.packb("proof")),
    "nil": frame(msgpack.packb(None)),
    "a map without proof": frame(msgpack.packb({"nope": b"x"})),
    "an empty map": frame(msgpack.packb({})),
    "proof an int": frame(msgpack.packb({"proof": 12})),
    "proof a string": frame(msgpack.packb({"proof": "a string"})),
    "proof a list": frame(msgpack.packb({"proof": [1, 2]})),
    "proof a map": frame(msgpack.packb({"proof": {"a": 1}})),
    "proof nil": frame(msgpack.packb({"proof": None})),
    "proof too short": frame(msgpack.packb({"proof": b"short"})),
    "proof too long for the limits": frame(msgpack.packb({"proof": b"p" * 100})),
    "a string too long for the limits": frame(msgpack.packb({"proof": "x" * 300})),
    "an array too long for the limits": frame(msgpack.packb({"proof": list(range(100))})),
    "a map too long for the limits": frame(msgpack.packb({f"k{i}": i for i in range(20)})),
    "an int map key": frame(msgpack.packb({1: b"x"})),
    "nested arrays": frame(b"\x91" * 400 + b"\xc0"),
    "an ext type": frame(msgpack.packb(msgpack.ExtType(5, b"abc"))),
    "not msgpack": frame(b"\xc1"),
    "trailing bytes": frame(b"\x80\x01"),
    "truncated": frame(b"\x92\x01"),
    "bad utf-8": frame(b"\x81\xa1\xff\x01"),
    "an empty header": frame(b""),
}


async def test_malformed_handshake_messages_are_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="core.wire")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            served = await start_server(nursery, tmp_path)
            client = BlobClient(SECRET, timeout=10)
            answers = {}
            for name, data in MALFORMED.items():
                conn = await challenged(served.addr)
                await conn.sock.send(data)
                with trio.fail_after(2):
                    answers[name] = await until_closed(conn)
                await put_and_get(client, served.addr)  # still serving
            await trio.sleep(0.1)
            assert served.crash is None, served.crash
            nursery.cancel_scope.cancel()
    wrong = {name: got for name, got in answers.items() if got != wire.pack(REFUSAL)}
    assert not wrong, f"not refused with {REFUSAL}: {wrong}"
    assert not [r.getMessage() for r in caplog.records if r.name == "core.wire"]


async def test_silent_or_slow_peer_is_dropped_at_the_handshake_deadline(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            served = await start_server(nursery, tmp_path)
            client = BlobClient(SECRET, timeout=10)
            closed: dict[str, float] = {}
            start = trio.current_time()

            async def silent() -> None:
                conn = await challenged(served.addr)
                await until_closed(conn)
                closed["silent"] = trio.current_time() - start

            async def trickle() -> None:
                conn = await challenged(served.addr)
                proof = wire.pack({"proof": os.urandom(32)})  # well formed, one byte at a time
                try:
                    for byte in proof:
                        await conn.sock.send(bytes([byte]))
                        await trio.sleep(0.2)
                except OSError:
                    pass
                await until_closed(conn)
                closed["trickle"] = trio.current_time() - start

            async with trio.open_nursery() as peers:
                peers.start_soon(silent)
                peers.start_soon(trickle)
                while len(closed) < 2:
                    await put_and_get(client, served.addr)  # served meanwhile
                    await trio.sleep(0.05)
            assert served.crash is None, served.crash
            nursery.cancel_scope.cancel()
    for name, at in closed.items():
        assert wire.HANDSHAKE_TIMEOUT - 0.3 <= at <= wire.HANDSHAKE_TIMEOUT + 1.0, (name, at, closed)
