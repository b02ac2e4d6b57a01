"""The blob node process: serves the chunk store over the framed msgpack protocol
(``core.wire``) and heartbeats its capacity and usage to raftmeta.

Every chunk that comes in (a put, a repair pull) is verified against the checksum its
sender names (``core.chunksum``: XXH3-128, or SHA-256 from a frontend or raftmeta of
before XXH3-128, which send it as ``sha256``) before it is fsynced and acknowledged."""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from blobnode.client import BlobClient
from blobnode.scrub import Scrubber
from blobnode.store import ChunkStore, StoreError
from core import wire
from core.nodes import HEARTBEAT_INTERVAL
from raftmeta.client import MetaClient

log = logging.getLogger("blobnode")

MAX_CHUNK = 64 * 1024 * 1024


class BlobServer:
    def __init__(self, store: ChunkStore, secret: str) -> None:
        self.store = store
        self.secret = secret
        self.limiter = trio.CapacityLimiter(8)  # concurrent disk operations
        self.peers = BlobClient(secret)  # other blob nodes, for repair pulls
        self.scrubber: Scrubber | None = None
        self.nursery: trio.Nursery | None = None
        self.scrubbing = False

    async def _scrub_now(self) -> None:
        self.scrubbing = True
        try:
            await self.scrubber.scrub_pass()
        except Exception:
            log.exception("requested scrub pass failed")
        finally:
            self.scrubbing = False

    async def serve_conn(self, stream: trio.SocketStream) -> None:
        await wire.serve_connection(stream, self.secret, self.handle)

    async def _disk(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    async def handle(self, conn: wire.FramedSocket, h: dict[str, Any]) -> None:
        op = h.get("op")
        n = int(h.get("n", 0) or 0)
        try:
            if op == "put":
                if n > MAX_CHUNK:
                    await conn.skip_payload(n)
                    raise StoreError(wire.ERR_BAD_REQUEST, "chunk too large")
                with self.store.writer(n) as chunk:  # the payload lands where O_DIRECT writes it from
                    await conn.recv_payload_into(chunk.memory)
                    created = await self._disk(chunk.commit, h["id"], _checksum(h))
                await conn.send({"ok": True, "created": created})
            elif op == "get":
                with await self._disk(self.store.open_for_send, h["id"], h.get("off", 0), h.get("len")) as reader:
                    head = {"ok": True, "size": reader.size, "checksum": reader.checksum.value}
                    if reader.data is not None:  # small: one send of header and bytes
                        await conn.send({**head, "n": len(reader.data)}, reader.data)
                    else:  # large: from the page cache to the socket, no copy through Python
                        await conn.send({**head, "n": reader.length})
                        await self._disk(reader.send_to, conn.sock.fileno())
            elif op == "stat":
                size, checksum = await self._disk(self.store.stat, h["id"])
                await conn.send({"ok": True, "size": size, "checksum": checksum})
            elif op == "delete":
                deleted = 0
                for chunk_id in h.get("ids", []):
                    deleted += await self._disk(self.store.delete, chunk_id)
                await conn.send({"ok": True, "deleted": deleted})
            elif op == "list":
                ids, more = await self._disk(self.store.list, h.get("after", ""), min(int(h.get("limit", 1000)), 10000),
                                             h.get("older_than"))
                await conn.send({"ok": True, "ids": ids, "more": more})
            elif op == "pull":  # repair: copy a chunk from another blob node, verified, stored durably
                _reply, data = await self.peers.get(h["src"], h["id"], timeout=60)
                created = await self._disk(self.store.put, h["id"], _checksum(h), data)
                await conn.send({"ok": True, "created": created, "size": len(data)})
            elif op == "scrub":  # an operator asked for a pass now; it runs in the background
                started = self.scrubber is not None and self.nursery is not None and not self.scrubbing
                if started:
                    self.nursery.start_soon(self._scrub_now)
                await conn.send({"ok": True, "started": started})
            elif op == "info":
                await conn.send({"ok": True, **self.info()})
            else:
                if n:
                    await conn.skip_payload(n)
                raise StoreError(wire.ERR_BAD_REQUEST, f"unknown op {op!r}")
        except StoreError as exc:
            await conn.send({"ok": False, "err": exc.code, "msg": exc.msg})
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            await conn.send({"ok": False, "err": wire.ERR_BAD_REQUEST, "msg": repr(exc)})

    def info(self) -> dict[str, Any]:
        total, free = self.store.capacity()
        return {"node_id": self.store.node_id, "capacity": total, "free": free,
                "used": self.store.used, "chunks": self.store.count,
                "scrub": self.scrubber.stats if self.scrubber else None}


def _checksum(h: dict[str, Any]) -> str:
    """A put's or pull's checksum value: ``checksum``, or ``sha256`` from older senders."""
    return h["checksum"] if "checksum" in h else h["sha256"]


async def heartbeat_loop(server: BlobServer, meta: MetaClient, advertise: str) -> None:
    while True:
        info = server.info()
        try:
            reply = await meta.write({
                "op": "node_heartbeat", "node_id": info["node_id"], "addr": advertise,
                # free space above the reserve is what writers may use
                "capacity": info["capacity"], "used": info["capacity"] - max(0, info["free"] - server.store.reserve),
                "chunks": info["chunks"], "ts": time.time(),
            }, deadline=HEARTBEAT_INTERVAL * 2)
            ok = bool(reply.get("ok"))
        except wire.WireError as exc:
            log.warning("heartbeat to raftmeta failed: %s", exc)
            ok = False
        # Until raftmeta has accepted one (e.g. while it elects its first leader), retry soon.
        await trio.sleep(HEARTBEAT_INTERVAL if ok else 0.3)


async def serve(args: Any) -> None:
    store = ChunkStore(args.data_dir, reserve=int(args.reserve_mb * 1024 * 1024))
    server = BlobServer(store, args.secret)
    meta = MetaClient(args.meta, args.secret)
    host, port = wire.split_addr(args.listen)
    advertise = args.advertise or args.listen
    log.info("blobnode %s (%s) listening on %s, %d chunks", store.node_id, args.data_dir, args.listen, store.count)
    server.scrubber = Scrubber(store, meta, args.scrub_rate, args.scrub_interval)
    async with trio.open_nursery() as nursery:
        server.nursery = nursery
        nursery.start_soon(heartbeat_loop, server, meta, advertise)
        nursery.start_soon(server.scrubber.run)
        nursery.start_soon(meta.follow_members)
        await trio.serve_tcp(server.serve_conn, port, host=host)
