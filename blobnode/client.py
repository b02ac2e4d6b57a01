"""Client of the blob node protocol (``core.wire``), used by frontends and raftmeta.
Chunk checksums are ``core.chunksum`` values (sent as ``checksum``: a blob node older
than XXH3-128 chunk checksums refuses these requests, so blob nodes are upgraded first)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core import wire


class BlobClient:
    def __init__(self, secret: str, timeout: float = 30.0) -> None:
        self.pool = wire.ConnectionPool(secret)
        self.timeout = timeout

    async def _call(
        self, addr: str, header: dict[str, Any], payload: bytes | bytearray | memoryview | None = None,
        *, want_payload: bool = False, timeout: float | None = None, **receive: Any,
    ) -> tuple[dict[str, Any], bytearray | memoryview | None]:
        if payload is not None:
            header = {**header, "n": len(payload)}
        reply, data = await self.pool.request(addr, header, payload, timeout or self.timeout, **receive)
        if data is None and want_payload:
            data = bytearray()
        if not reply.get("ok"):
            raise wire.WireError(reply.get("err", wire.ERR_INTERNAL), reply.get("msg", ""))
        return reply, data

    async def put(self, addr: str, chunk_id: str, checksum: str, data: bytes | bytearray | memoryview) -> bool:
        """Store a chunk on the node at ``addr``, which verifies it against ``checksum``
        before its fsync; False if an identical chunk was already there."""
        reply, _ = await self._call(addr, {"op": "put", "id": chunk_id, "checksum": checksum}, data)
        return bool(reply.get("created"))

    async def get(
        self, addr: str, chunk_id: str, offset: int = 0, length: int | None = None, *, timeout: float | None = None,
        into: Callable[[int], memoryview] | None = None, consume: Callable[[memoryview], None] | None = None,
    ) -> tuple[dict[str, Any], bytearray | memoryview]:
        """The chunk's bytes, unverified, and the reply (``size`` and ``checksum``: the whole
        chunk's, from its header). ``into`` and ``consume``: see ``ConnectionPool.request``."""
        header: dict[str, Any] = {"op": "get", "id": chunk_id, "off": offset}
        if length is not None:
            header["len"] = length
        reply, data = await self._call(addr, header, want_payload=True, timeout=timeout, into=into, consume=consume)
        assert data is not None
        return reply, data

    async def stat(self, addr: str, chunk_id: str) -> dict[str, Any]:
        return (await self._call(addr, {"op": "stat", "id": chunk_id}))[0]

    async def delete(self, addr: str, chunk_ids: list[str]) -> int:
        return (await self._call(addr, {"op": "delete", "ids": chunk_ids}))[0]["deleted"]

    async def list(self, addr: str, after: str = "", limit: int = 1000,
                   older_than: float | None = None) -> tuple[list[str], bool]:
        header: dict[str, Any] = {"op": "list", "after": after, "limit": limit}
        if older_than is not None:
            header["older_than"] = older_than
        reply = (await self._call(addr, header))[0]
        return reply["ids"], reply["more"]

    async def list_all(self, addr: str) -> list[str]:
        ids: list[str] = []
        more = True
        while more:
            page, more = await self.list(addr, ids[-1] if ids else "", 10000)
            ids.extend(page)
        return ids

    async def pull(self, addr: str, chunk_id: str, checksum: str, src: str) -> bool:
        """Ask the node at ``addr`` to copy a chunk from the node at ``src`` (node to node:
        the bytes never pass through the caller), verified against ``checksum`` (the
        manifest's, in its own algorithm) before its fsync."""
        header = {"op": "pull", "id": chunk_id, "checksum": checksum, "src": src}
        reply = (await self._call(addr, header, timeout=90))[0]
        return bool(reply.get("created"))

    async def scrub(self, addr: str) -> bool:
        """Start a scrub pass on the node now (False: one is already running)."""
        return bool((await self._call(addr, {"op": "scrub"}, timeout=5))[0].get("started"))

    async def info(self, addr: str, timeout: float = 3.0) -> dict[str, Any]:
        return (await self._call(addr, {"op": "info"}, timeout=timeout))[0]
