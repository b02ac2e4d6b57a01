"""Repair: bring every chunk back to ``replicas`` healthy copies, node to node.

A pass first measures the backlog (one walk of the chunk index, ``repair_scan``: the
chunks written with too few replicas and those on nodes that do not count now, never a
scan of every manifest; chunks, and bytes of missing replicas, the denominator of the
progress and ETA an operator sees), then copies
up to ``budget`` chunks, ``IN_FLIGHT`` at once under one shared rate limit (client
traffic keeps the disks first): the target pulls from a good source and verifies the
chunk's checksum (the manifest's, in its own algorithm: ``core.chunksum``) before its
fsync; no byte passes through raftmeta. The new replica set is
recorded with ``set_replicas`` (``raftmeta.sm.repair``), which applies only if the
object is still the version scanned. Which nodes count is ``core.nodes``' rule: replicas
on active nodes that are not dead count; any node not dead can be a source (draining
ones too); targets are nodes that take chunks now. A draining node's copy leaves a
manifest only once replaced.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import trio

from core import wire
from core.nodes import BlobNode
from raftmeta.chores import Chore, Leader

log = logging.getLogger("raftmeta")

IN_FLIGHT = 4  # chunk copies node to node at once (each its own source and target disks)
BUDGET = 500  # chunks per pass
SCAN_PAGE = 1000


@dataclass
class RepairStats:
    replicas: int
    dead_after: float
    interval: float
    rate_mb_s: float
    last_run: float | None = None
    last_under_replicated: int = 0
    repaired_total: int = 0
    bytes_total: int = 0
    dead_nodes: list[str] = field(default_factory=list)
    # progress of the pass under way: what it found, what it did
    backlog_chunks: int = 0
    backlog_bytes: int = 0
    pass_bytes: int = 0
    pass_started: float | None = None
    rate_bytes_s: int | None = None
    eta_s: float | None = None


class Repair(Chore):
    name = "repair"

    def __init__(self, leader: Leader, interval: float, replicas: int, dead_after: float, rate_mb_s: float) -> None:
        super().__init__(leader, interval)
        self.stats = RepairStats(replicas=replicas, dead_after=dead_after, interval=interval, rate_mb_s=rate_mb_s)
        self._paced_until = 0.0  # when the rate limit lets the next chunk copy start

    async def run_pass(self, budget: int = BUDGET) -> int:
        if not self.leader.is_leader():
            return 0
        now = time.time()
        nodes = [BlobNode.from_record(n) for n in (await self.leader.query({"q": "nodes"}))["nodes"]]
        reachable = {n.node_id: n for n in nodes if n.reachable(now, self.stats.dead_after)}
        counted = {n.node_id: n for n in nodes if n.holds_replicas(now, self.stats.dead_after)}
        self.stats.dead_nodes = sorted(n.node_id for n in nodes if n.node_id not in reachable)
        todo = await self._measure_backlog(list(counted), budget)
        pass_started = time.monotonic()
        self._paced_until = max(self._paced_until, pass_started)
        repaired = 0
        slots = trio.Semaphore(IN_FLIGHT)

        async def repair_one(item: list[Any]) -> None:
            nonlocal repaired
            try:
                if await self._repair_chunk(item, counted, reachable, nodes, now, pass_started):
                    repaired += 1
            finally:
                slots.release()

        async with trio.open_nursery() as nursery:
            for item in todo:
                await slots.acquire()
                nursery.start_soon(repair_one, item)
        self.stats.last_run = time.time()
        self.stats.repaired_total += repaired
        if repaired:
            log.info("repair: %d chunks re-replicated (%d under-replicated seen)", repaired, self.stats.backlog_chunks)
        return repaired

    async def _repair_chunk(self, item: list[Any], counted: dict[str, BlobNode], reachable: dict[str, BlobNode],
                            nodes: list[BlobNode], now: float, pass_started: float) -> bool:
        """Copy one under-replicated chunk onto spare nodes and record the new replica
        set; True if a replica was added and recorded."""
        bucket, key, version, chunk, size, sha256, replicas = item
        healthy = [n for n in replicas if n in counted]
        sources = healthy + [n for n in replicas if n in reachable and n not in counted]  # + draining
        if not sources:
            log.error("chunk %s of %s/%s has no live replica", chunk, bucket, key)
            return False
        spares = sorted((n for n in nodes if n.node_id not in healthy and n.takes_chunks(now, size)),
                        key=lambda n: n.free, reverse=True)  # the emptiest first; a full disk takes none
        added = []
        for target in spares[: self.stats.replicas - len(healthy)]:
            tick = time.monotonic()  # the rate limit, shared by the pulls in flight
            start_at = self._paced_until
            self._paced_until = max(tick, start_at) + size / (self.stats.rate_mb_s * 1e6)
            await trio.sleep(max(0.0, start_at - tick))
            try:
                await self.leader.blobs.pull(target.addr, chunk, sha256, reachable[sources[0]].addr)
            except (wire.WireError, OSError) as exc:
                log.warning("repair of chunk %s onto %s failed: %s", chunk, target.node_id, exc)
                continue
            added.append(target.node_id)
            self.stats.bytes_total += size
            self._progress(size, time.monotonic() - pass_started)
        keep = healthy + added
        if len(keep) < self.stats.replicas:  # a draining copy leaves only once replaced
            keep += [n for n in sources if n not in keep]
        if set(keep) == set(replicas):
            return False
        result = await self.leader.propose({"op": "set_replicas", "bucket": bucket, "key": key,
                                            "version": version, "chunk": chunk, "nodes": keep})
        return bool(result.get("ok") and added)

    async def _measure_backlog(self, counted: list[str], budget: int) -> list[list[Any]]:
        """One walk of the chunk index (``repair_scan``, a bounded page a query): what is
        under-replicated now; the first ``budget`` of those chunks are this pass's work."""
        want = self.stats.replicas
        chunks = missing = 0
        todo: list[list[Any]] = []
        cursor: list[str] = ["", ""]
        while True:
            scan = await self.leader.query({"q": "repair_scan", "alive": counted, "want": want, "after": cursor,
                                            "limit": SCAN_PAGE})
            if not scan.get("ok"):
                break
            for item in scan["items"]:
                chunks += 1
                missing += item[4] * max(1, want - len([n for n in item[6] if n in counted]))
                if len(todo) < budget:
                    todo.append(item)
            if scan["done"]:
                break
            cursor = scan["next"]
        s = self.stats
        s.backlog_chunks, s.backlog_bytes, s.pass_bytes, s.last_under_replicated = chunks, missing, 0, chunks
        s.pass_started = time.time() if chunks else None
        s.rate_bytes_s, s.eta_s = None, (0.0 if not chunks else None)
        return todo

    def _progress(self, size: int, elapsed: float) -> None:
        self.stats.pass_bytes += size
        rate = self.stats.pass_bytes / max(elapsed, 1e-3)
        self.stats.rate_bytes_s = round(rate)
        self.stats.eta_s = round(max(0, self.stats.backlog_bytes - self.stats.pass_bytes) / rate, 1)

    async def status(self) -> dict[str, Any]:
        return {"repair": asdict(self.stats)}
