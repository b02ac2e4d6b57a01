"""The byte path of the frontend: ``DataPath``, chunks in (quorum writes), chunks out
(verified reads). What the S3 handlers call to store and read object bytes.

``DataPath`` is put together from its parts, each in its own module: the chunk buffers
and their budget (``budget``), the blob-node registry as this frontend sees it
(``nodedir``), the write side (``writes``: chunking, hashing, replication with quorum
and stragglers) and the read side (``reads``: fetch, verify, stream, the prefetching GET
body). Here: its settings, read repair and the hand-off of a failed upload's chunks to GC.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import trio

from blobnode.client import BlobClient
from core import wire
from frontend.nodedir import NodeDirectory
from frontend.reads import SMALL_BODY, ChunkReads, PrefetchingBody
from frontend.writes import ChunkWrites, QuorumError, Stored
from raftmeta.client import MetaClient

__all__ = ["SMALL_BODY", "DataPath", "PrefetchingBody", "QuorumError", "Settings", "Stored"]

log = logging.getLogger("frontend.datapath")


@dataclass
class Settings:
    chunk_size: int = 8 * 1024 * 1024
    replicas: int = 3
    write_quorum: int = 2
    write_timeout: float = 30.0
    buffer_budget: int = 64 * 1024 * 1024  # all chunk buffers of this frontend, reads and writes
    inline_max: int = 16 * 1024  # a body this small (one chunk) lives in its manifest, replicated by Raft



class DataPath(ChunkWrites, ChunkReads):
    def __init__(self, meta: MetaClient, blobs: BlobClient, settings: Settings) -> None:
        super().__init__(settings.chunk_size, settings.buffer_budget)
        self.meta = meta
        self.blobs = blobs
        self.settings = settings
        self.directory = NodeDirectory(meta)
        self._bad, self._bad_recv = trio.open_memory_channel[tuple](256)  # read repair reports

    def report_bad(self, bucket: str, key: str, version: int, chunk_id: str, node_id: str) -> None:
        """Queue a replica that a read found missing or corrupt (never blocks a GET)."""
        try:
            self._bad.send_nowait((bucket, key, version, chunk_id, node_id))
        except trio.WouldBlock:
            log.warning("read-repair queue full: chunk %s on %s left to the repair scan", chunk_id, node_id)

    async def read_repair_loop(self) -> None:
        """Drop reported bad replicas from their manifests through Raft; the leader's
        repair then re-creates them from a good copy."""
        async for bucket, key, version, chunk_id, node_id in self._bad_recv:
            try:
                reply = await self.meta.write({"op": "drop_replica", "bucket": bucket, "key": key, "version": version,
                                               "chunk": chunk_id, "node": node_id}, deadline=10)
                if reply.get("ok"):
                    log.info("read repair: replica of chunk %s on %s dropped, repair will re-create it", chunk_id, node_id)
            except wire.WireError as exc:
                log.warning("read repair of chunk %s not recorded: %s", chunk_id, exc)

    async def discard(self, chunks: list[list[Any]]) -> None:
        """Hand chunks of a failed upload to the garbage collector (best effort)."""
        written = [c for c in chunks if c[3]]
        if not written:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            try:
                await self.meta.write({"op": "discard_chunks", "chunks": written, "ts": time.time()}, deadline=10)
            except wire.WireError as exc:
                log.warning("could not queue %d orphan chunks for gc: %s", len(written), exc)
