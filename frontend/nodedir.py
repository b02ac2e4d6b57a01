"""The blob-node registry as this frontend sees it: raftmeta's ``nodes`` query, refreshed
every couple of seconds, plus what only this frontend knows (which nodes failed it a
moment ago, how fast each one answers). Writes ask it where chunks may go, reads in
which order to try replicas.
"""

from __future__ import annotations

import logging
import time

import trio

from core import wire
from core.nodes import BlobNode
from raftmeta.client import MetaClient

log = logging.getLogger("frontend.datapath")

NODES_REFRESH = 2.0
NODE_BACKOFF = 5.0  # seconds a node that failed an operation is tried last


class NodeDirectory:
    """The blob-node registry as this frontend last read it, plus local health marks."""

    def __init__(self, meta: MetaClient) -> None:
        self.meta = meta
        self.nodes: dict[str, BlobNode] = {}
        self.failed_at: dict[str, float] = {}
        self.latency: dict[str, float] = {}
        self.fresh = trio.Event()
        self.refreshed_at = 0.0

    async def refresh(self) -> None:
        self.refreshed_at = time.monotonic()
        reply = await self.meta.read({"q": "nodes"}, linear=False, deadline=5.0)
        if reply.get("ok"):
            self.nodes = {n["node_id"]: BlobNode.from_record(n) for n in reply["nodes"]}
            self.fresh.set()

    async def refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except wire.WireError as exc:
                log.warning("cannot refresh the blob-node registry: %s", exc)
            await trio.sleep(NODES_REFRESH)

    def writable(self, room: int = 0) -> list[BlobNode]:
        """Nodes that take chunks of ``room`` bytes (``BlobNode.takes_chunks``); nodes
        that failed a moment ago only if nothing else is left."""
        now = time.time()
        mono = time.monotonic()
        alive = [n for n in self.nodes.values() if n.takes_chunks(now, room)]
        healthy = [n for n in alive if mono - self.failed_at.get(n.node_id, -1e9) > NODE_BACKOFF]
        return healthy if healthy else alive

    def read_order(self, node_ids: list[str]) -> list[str]:
        mono = time.monotonic()

        def key(node_id: str) -> tuple[bool, float]:
            recently_failed = mono - self.failed_at.get(node_id, -1e9) < NODE_BACKOFF
            return recently_failed, self.latency.get(node_id, 0.0)

        return sorted(node_ids, key=key)

    def mark_failed(self, node_id: str) -> None:
        self.failed_at[node_id] = time.monotonic()

    def observe(self, node_id: str, seconds: float) -> None:
        old = self.latency.get(node_id)
        self.latency[node_id] = seconds if old is None else 0.8 * old + 0.2 * seconds
        self.failed_at.pop(node_id, None)
