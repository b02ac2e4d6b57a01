"""Shared by the blob node's integration tests: a real ``BlobServer`` on a loopback socket,
run in the test's nursery through ``trio.serve_tcp`` (``start_blob``, or ``blob_node``
with a nursery of its own), and what the tests look at.

A handler exception that would take the whole server down is caught by ``Served._run``
and recorded in ``Served.crash``, so that a test can assert the server survived.
"""

from __future__ import annotations

import hashlib
import math
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from blobnode.chunkfile import HEADER_SIZE
from blobnode.client import BlobClient
from blobnode.server import BlobServer
from blobnode.store import ChunkStore
from core import chunksum, wire

SECRET = "test-cluster-secret"
MiB = 1024 * 1024


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


@asynccontextmanager
async def blob_node(root: Path, secret: str = SECRET, port: int = 0) -> AsyncIterator[Served]:
    """A BlobServer (``start_blob``) in a nursery of its own, stopped on leaving."""
    async with trio.open_nursery() as nursery:
        yield await start_blob(nursery, root, secret, port)
        nursery.cancel_scope.cancel()


async def put_chunk(client: BlobClient, served: Served, size: int) -> tuple[str, bytes, Path]:
    """Put a chunk of ``size`` random bytes: (its id, its bytes, its file)."""
    cid, data = new_id(), os.urandom(size)
    await client.put(served.addr, cid, checksum(data), data)
    return cid, data, Path(served.store.path(cid))


def checksum(data: bytes | bytearray) -> str:
    """The chunk checksum a current frontend sends (XXH3-128, ``core.chunksum``)."""
    return chunksum.compute(data).value


def sha(data: bytes | bytearray) -> str:
    """A chunk checksum as frontends sent it before XXH3-128: SHA-256, 64 hex digits."""
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


async def until_closed(conn: wire.FramedSocket, timeout: float = math.inf) -> bytes:
    """Read everything the server sends until it closes the connection (EOF or reset)."""
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
        created = await client.put(served.addr, cid, checksum(data), data)
        reply, got = await client.get(served.addr, cid)
        deleted = await client.delete(served.addr, [cid])
    except wire.WireError as exc:
        return f"a new client is not served: {exc!r}"
    if (created, bytes(got), reply["checksum"], deleted) != (True, data, checksum(data), 1):
        return "a new client's round trip went wrong"
    return None


async def assert_alive(served: Served) -> None:
    problem = await server_problem(served)
    assert problem is None, problem


def assert_no_partial_chunk(root: Path, allowed: set[str] = frozenset()) -> None:
    assert {p.name for p in chunk_files(root)} <= set(allowed)
    assert tmp_files(root) == []


def rot(store: ChunkStore, chunk_id: str) -> None:
    """Flip a byte in a stored chunk's body, as bit rot would."""
    path = Path(store.path(chunk_id))
    raw = bytearray(path.read_bytes())
    raw[HEADER_SIZE + 10] ^= 0xFF
    path.write_bytes(raw)
