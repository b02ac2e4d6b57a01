"""The orphan sweep, both ways: replicas that manifests place on a node whose disk lacks
them are reported lost (so repair re-creates them), and chunk files that no manifest
places on their node and that are older than ``grace`` are deleted (written by a frontend that died mid-upload, cut-off slow
replicas, copies superseded by repair on a node that came back). Nodes that are not up
now are swept when they are back. The grace must exceed the longest upload: an upload's
chunks are unreferenced until its commit."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from core import wire
from core.nodes import BlobNode
from raftmeta.chores import Chore, Leader

log = logging.getLogger("raftmeta")

PAGE = 1000  # chunk ids listed per call


@dataclass
class OrphanStats:
    grace: float
    interval: float
    last_run: float | None = None
    deleted_total: int = 0
    missing_total: int = 0  # replicas a manifest names that were not on their node's disk


class OrphanSweep(Chore):
    name = "orphans"

    def __init__(self, leader: Leader, interval: float, grace: float) -> None:
        super().__init__(leader, interval)
        self.stats = OrphanStats(grace=grace, interval=interval)

    async def run_pass(self) -> int:
        if not self.leader.is_leader():
            return 0
        now = time.time()
        deleted = 0
        for record in (await self.leader.query({"q": "nodes"}))["nodes"]:
            node = BlobNode.from_record(record)
            if not node.is_up(now):
                continue  # not reachable now; its files are looked at when it is back
            refs = await self._refs(node.node_id)
            try:
                await self._missing(node, refs)
                after, more = "", True
                while more:
                    ids, more = await self.leader.blobs.list(node.addr, after, PAGE, older_than=now - self.stats.grace)
                    orphans = [i for i in ids if i not in refs]
                    if orphans:
                        deleted += await self.leader.blobs.delete(node.addr, orphans)
                    if ids:
                        after = ids[-1]
            except (wire.WireError, OSError) as exc:
                log.info("orphan sweep of node %s stopped: %s", node.node_id, exc)
        self.stats.last_run = time.time()
        self.stats.deleted_total += deleted
        if deleted:
            log.info("orphan sweep: %d unreferenced chunk files deleted", deleted)
        return deleted

    async def _refs(self, node_id: str) -> set[str]:
        """The chunk ids manifests place on ``node_id``, from the chunk index, a page a
        query (each O(page), whatever the number of objects)."""
        refs: set[str] = set()
        after, more = "", True
        while more:
            page = await self.leader.query({"q": "node_refs", "node": node_id, "after": after, "limit": PAGE})
            refs.update(page["ids"])
            more = bool(page.get("more")) and bool(page["ids"])
            if page["ids"]:
                after = page["ids"][-1]
        return refs

    async def _missing(self, node: BlobNode, refs: set[str]) -> None:
        """The other direction: replicas the manifests (read before the listing) place on
        this node whose file is not there (deleted, a disk replaced). A manifest names a
        replica only after its file was written, and a chunk still referenced is never
        collected, so an absent one is lost: ``replicas_lost`` drops it from the
        manifests (never a chunk's last replica) and repair makes a new one. Only a
        listing that completed counts."""
        present: set[str] = set()
        after, more = "", True
        while more:
            ids, more = await self.leader.blobs.list(node.addr, after, PAGE)
            present.update(ids)
            if ids:
                after = ids[-1]
        missing = sorted(refs - present)
        for start in range(0, len(missing), PAGE):
            batch = missing[start:start + PAGE]
            result = await self.leader.propose({"op": "replicas_lost", "node": node.node_id, "chunks": batch})
            if result.get("ok"):
                self.stats.missing_total += len(batch)
        if missing:
            log.warning("orphan sweep: %d replicas named by manifests are missing from node %s; repair re-creates "
                        "them", len(missing), node.node_id)

    async def status(self) -> dict[str, Any]:
        return {"orphans": asdict(self.stats)}
