"""The scrubber: every chunk on this node is re-read and re-hashed at a bounded rate.
A corrupt chunk is quarantined (moved out of ``chunks/``) and reported to raftmeta,
which drops this replica from the manifests that name it; the leader's repair then
re-creates it from a good copy."""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from blobnode.store import ChunkStore
from cairn import wire
from raftmeta.client import MetaClient

log = logging.getLogger("blobnode.scrub")


class Scrubber:
    def __init__(self, store: ChunkStore, meta: MetaClient, rate_mb_s: float, interval: float) -> None:
        self.store, self.meta = store, meta
        self.rate = max(rate_mb_s, 0.1) * 1e6
        self.interval = interval
        self.stats: dict[str, Any] = {"passes": 0, "scrubbed_bytes": 0, "corrupt_found": 0, "last_pass": None,
                                      "rate_mb_s": rate_mb_s}

    async def run(self) -> None:
        while True:
            try:
                await self.scrub_pass()
            except Exception:
                log.exception("scrub pass failed")
            await trio.sleep(self.interval)

    async def scrub_pass(self) -> int:
        corrupt: list[str] = []
        after = ""
        while True:
            ids, more = await trio.to_thread.run_sync(self.store.list, after, 200)
            for chunk_id in ids:
                started = time.monotonic()
                intact, size = await trio.to_thread.run_sync(self.store.verify, chunk_id)
                self.stats["scrubbed_bytes"] += size
                if not intact:
                    log.error("scrub: chunk %s is corrupt: quarantined", chunk_id)
                    await trio.to_thread.run_sync(self.store.quarantine, chunk_id)
                    corrupt.append(chunk_id)
                # the rate limit: client traffic keeps the disk and the CPU first
                await trio.sleep(max(0.0, size / self.rate - (time.monotonic() - started)))
            if not more:
                break
            after = ids[-1]
        if corrupt:
            await self.report(corrupt)
        self.stats["passes"] += 1
        self.stats["corrupt_found"] += len(corrupt)
        self.stats["last_pass"] = time.time()
        return len(corrupt)

    async def report(self, chunks: list[str]) -> None:
        try:
            await self.meta.write({"op": "replicas_lost", "node": self.store.node_id, "chunks": chunks}, deadline=30)
        except wire.WireError as exc:  # the repair scan finds them anyway once this node is checked again
            log.warning("could not report %d quarantined chunks: %s", len(chunks), exc)
