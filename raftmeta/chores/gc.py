"""Garbage collection: delete the chunks the GC queue (``raftmeta.sm.gcqueue``) holds once
their grace period has passed, node by node, then record that through Raft. A node that
cannot be reached keeps its chunks queued for the next pass."""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from core import wire
from raftmeta.chores import Chore, Leader

log = logging.getLogger("raftmeta")

BATCH = 2000  # queued chunks per pass


class GarbageCollector(Chore):
    name = "gc"

    def __init__(self, leader: Leader, interval: float, grace: float) -> None:
        super().__init__(leader, interval)
        self.grace = grace
        self.deleted = 0  # chunks deleted while this node led

    async def run_pass(self) -> int:
        if not self.leader.is_leader():
            return 0
        pending = await self.leader.query({"q": "gc_pending", "before": time.time() - self.grace, "limit": BATCH})
        if not pending.get("items"):
            return 0
        addrs = {n["node_id"]: n["addr"] for n in (await self.leader.query({"q": "nodes"}))["nodes"]}
        by_node: dict[str, list[str]] = {}
        for _seq, chunk, nodes in pending["items"]:
            for node_id in nodes:
                by_node.setdefault(node_id, []).append(chunk)
        failed_nodes: set[str] = set()
        for node_id, chunks in by_node.items():
            addr = addrs.get(node_id)
            try:
                if addr is None:
                    raise wire.WireError(wire.ERR_UNAVAILABLE, "unknown node")
                await self.leader.blobs.delete(addr, chunks)
            except (wire.WireError, OSError, trio.TooSlowError) as exc:
                log.info("gc: node %s unreachable (%s); will retry", node_id, exc)
                failed_nodes.add(node_id)
        done = [seq for seq, _chunk, nodes in pending["items"] if not failed_nodes.intersection(nodes)]
        if done:
            result = await self.leader.propose({"op": "gc_done", "seqs": done, "ts": time.time()})
            if result.get("ok"):
                self.deleted += len(done)
        return len(done)

    async def status(self) -> dict[str, Any]:
        queue = await self.leader.query({"q": "gc_pending", "before": time.time() - self.grace, "limit": 0})
        return {"gc": {"grace": self.grace, "queued": queue["total"], "deleted_total": self.deleted}}
