"""Placement: which blob nodes hold a chunk. Pure; the frontend feeds it the registry.

Weighted rendezvous hashing: every (chunk, node) pair gets a score from a hash, scaled
by the node's free space, and the chunk goes to the best-scoring distinct nodes. The
choice is stable (adding a node moves only the chunks it wins), spreads evenly, and
leans toward emptier disks. Nodes past the first ``n`` are fallbacks, in order. Which
nodes may take chunks at all is ``BlobNode.takes_chunks`` (``core.nodes``).
"""

from __future__ import annotations

import hashlib
import math

from core.nodes import BlobNode


def _score(chunk_id: str, node: BlobNode) -> float:
    digest = hashlib.blake2b(f"{chunk_id}/{node.node_id}".encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)  # in (0, 1)
    weight = max(node.free, 1) if node.capacity else 1
    return -weight / math.log(u)


def rank(chunk_id: str, nodes: list[BlobNode]) -> list[BlobNode]:
    """All ``nodes`` (distinct by id), best home for ``chunk_id`` first."""
    unique = {n.node_id: n for n in nodes}
    return sorted(unique.values(), key=lambda n: _score(chunk_id, n), reverse=True)
