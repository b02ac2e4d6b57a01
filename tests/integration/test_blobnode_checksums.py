"""Both chunk checksums through a real blob node: puts from frontends of before XXH3-128
(a SHA-256 in ``sha256``) are verified and kept as SHA-256, a chunk file of the old
layout (v1) is served and reported with its SHA-256, repair pulls verify with the
chunk's own algorithm (a corrupt source is refused, nothing stored), and the scrubber
checks each chunk with its header's algorithm.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest
import trio

from blobnode.client import BlobClient
from blobnode.scrub import Scrubber
from blobnode.store import ChunkStore
from core import wire
from tests.integration.blobnodes import (
    SECRET,
    MiB,
    assert_alive,
    blob_node,
    checksum,
    new_id,
    raw_connect,
    rot,
    sha,
    start_blob,
)

VALUES = {"sha256": sha, "xxh3": checksum}


def write_v1_chunk(store: ChunkStore, chunk_id: str, data: bytes) -> Path:
    """A chunk file exactly as the code before XXH3-128 wrote it."""
    path = Path(store.path(chunk_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    header = b"CAIRNCK1" + struct.pack(">Q", len(data)) + hashlib.sha256(data).digest() + b"\0" * 16
    path.write_bytes(header + data)
    return path


async def test_an_old_frontends_sha256_put_is_verified_and_kept(tmp_path: Path) -> None:
    async with blob_node(tmp_path) as served:
        cid, data = new_id(), os.urandom(200_000)
        conn = await raw_connect(served.addr)
        for value, want in ((sha(data[1:]), False), (sha(data), True)):
            await conn.send({"op": "put", "id": cid, "sha256": value, "n": len(data)}, data)
            reply = await conn.recv_header()
            assert reply is not None and reply["ok"] is want, reply
            if not want:
                assert reply["err"] == wire.ERR_CHECKSUM
        conn.close()
        client = BlobClient(SECRET)
        reply, got = await client.get(served.addr, cid)
        assert bytes(got) == data and reply["checksum"] == sha(data)
        assert (await client.stat(served.addr, cid))["checksum"] == sha(data)
        await assert_alive(served)


async def test_a_v1_chunk_file_is_served_with_its_sha256(tmp_path: Path) -> None:
    async with blob_node(tmp_path) as served:
        cid, data = new_id(), os.urandom(3 * MiB)
        write_v1_chunk(served.store, cid, data)
        client = BlobClient(SECRET)
        reply, got = await client.get(served.addr, cid)
        assert bytes(got) == data and reply["checksum"] == sha(data) and reply["size"] == 3 * MiB
        reply, got = await client.get(served.addr, cid, 100, 50)
        assert bytes(got) == data[100:150] and reply["checksum"] == sha(data)
        assert await client.put(served.addr, cid, sha(data), data) is False  # intact: left as written


@pytest.mark.parametrize("kind", ["sha256", "xxh3", "v1"])
async def test_a_pull_verifies_with_the_chunks_own_algorithm(tmp_path: Path, kind: str) -> None:
    async with trio.open_nursery() as nursery:
        src = await start_blob(nursery, tmp_path / "src")
        dst = await start_blob(nursery, tmp_path / "dst")
        client = BlobClient(SECRET)
        good, bad, data = new_id(), new_id(), os.urandom(MiB + 7)
        value = sha(data) if kind == "v1" else VALUES[kind](data)
        for cid in (good, bad):
            if kind == "v1":
                write_v1_chunk(src.store, cid, data)
            else:
                await client.put(src.addr, cid, value, data)
        rot(src.store, bad)

        assert await client.pull(dst.addr, good, value, src.addr) is True
        reply, got = await client.get(dst.addr, good)
        assert bytes(got) == data and reply["checksum"] == value

        with pytest.raises(wire.WireError) as err:
            await client.pull(dst.addr, bad, value, src.addr)
        assert err.value.code == wire.ERR_CHECKSUM and not dst.store.holds(bad)

        # a leader of before XXH3-128 sends the manifest's SHA-256 as ``sha256``
        if kind != "xxh3":
            conn = await raw_connect(dst.addr)
            other = new_id()
            write_v1_chunk(src.store, other, data)
            await conn.send({"op": "pull", "id": other, "sha256": sha(data), "src": src.addr})
            reply = await conn.recv_header()
            conn.close()
            assert reply is not None and reply["ok"] and reply["created"], reply
        nursery.cancel_scope.cancel()


class Meta:
    def __init__(self) -> None:
        self.lost: list[str] = []

    async def write(self, cmd: dict, deadline: float = 20.0) -> dict:
        self.lost += cmd["chunks"]
        return {"ok": True}


async def test_the_scrubber_checks_each_chunk_with_its_headers_algorithm(tmp_path: Path) -> None:
    store = ChunkStore(str(tmp_path))
    ids: dict[str, str] = {}
    for kind in ("v1", "sha256", "xxh3"):
        for state in ("good", "rotten"):
            cid, data = new_id(), os.urandom(50_000)
            if kind == "v1":
                write_v1_chunk(store, cid, data)
            else:
                store.put(cid, VALUES[kind](data), data)
            if state == "rotten":
                rot(store, cid)
            ids[f"{kind} {state}"] = cid
    meta = Meta()
    corrupt = await Scrubber(store, meta, rate_mb_s=1000, interval=3600).scrub_pass()  # type: ignore[arg-type]
    rotten = sorted(cid for name, cid in ids.items() if name.endswith("rotten"))
    assert corrupt == 3 and sorted(meta.lost) == rotten
    assert store.quarantined() == rotten
    assert all(store.verify(cid) == (True, 50_000) for name, cid in ids.items() if name.endswith("good"))
