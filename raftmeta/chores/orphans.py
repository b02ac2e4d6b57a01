"""The orphan sweep: delete chunk files that no manifest places on their node and that
are older than ``grace`` (written by a frontend that died mid-upload, cut-off slow
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
            refs = set((await self.leader.query({"q": "node_refs", "node": node.node_id}))["ids"])
            after, more = "", True
            try:
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

    async def status(self) -> dict[str, Any]:
        return {"orphans": asdict(self.stats)}
