"""What a blob node is to the rest of the cluster: its record, its state, and one rule
for whether it is alive.

raftmeta keeps the registry (``nodes`` table: heartbeats and the operator's state);
placement, repair, the orphan sweep, the operator's status and the console read it
through this model only, so every part of the cluster agrees on which node is up.

- **state** is what the operator set: ``active``; ``draining`` (serves reads, takes no
  new chunks, repair moves its replicas away); ``removed`` (decommissioned, hidden).
- **liveness** comes from the last heartbeat's age (blob nodes heartbeat every 3 s):
  ``up`` below ``UNAVAILABLE_AFTER``; ``unavailable`` until ``dead_after`` (raftmeta's
  ``--dead-after``): not written to, not swept, but its replicas still count, since a
  node that restarts or comes back from a partition keeps its disk; ``dead`` beyond:
  its replicas are re-created elsewhere.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HEARTBEAT_INTERVAL = 3.0  # seconds between a blob node's heartbeats
UNAVAILABLE_AFTER = 12.0  # seconds without a heartbeat: four missed beats
DEFAULT_DEAD_AFTER = 600.0


class NodeState(enum.StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"
    REMOVED = "removed"


class Liveness(enum.StrEnum):
    UP = "up"
    UNAVAILABLE = "unavailable"
    DEAD = "dead"


def liveness(heartbeat_age: float, dead_after: float = DEFAULT_DEAD_AFTER) -> Liveness:
    """The one rule: how alive a node is whose last heartbeat is ``heartbeat_age`` old."""
    if heartbeat_age >= dead_after:
        return Liveness.DEAD
    if heartbeat_age >= UNAVAILABLE_AFTER:
        return Liveness.UNAVAILABLE
    return Liveness.UP


@dataclass(frozen=True)
class BlobNode:
    """One registry entry, as raftmeta's ``nodes`` query returns it."""

    node_id: str
    addr: str
    capacity: int = 0
    used: int = 0
    heartbeat: float = 0.0
    state: NodeState = NodeState.ACTIVE
    chunks: int = 0

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> BlobNode:
        return cls(record["node_id"], record["addr"], record.get("capacity", 0), record.get("used", 0),
                   record.get("heartbeat", 0.0), NodeState(record.get("state", NodeState.ACTIVE)),
                   record.get("chunks", 0))

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.used)

    def liveness(self, now: float, dead_after: float = DEFAULT_DEAD_AFTER) -> Liveness:
        return liveness(now - self.heartbeat, dead_after)

    def is_up(self, now: float) -> bool:
        return self.liveness(now) is Liveness.UP

    def takes_chunks(self, now: float, room: int = 0) -> bool:
        """New chunks (writes, repair targets) go here: up, active, and (as last reported)
        ``room`` bytes free above its reserve (a node that reports no capacity: any)."""
        return self.is_up(now) and self.state is NodeState.ACTIVE and (not self.capacity or self.free >= room)

    def holds_replicas(self, now: float, dead_after: float) -> bool:
        """Its copies count toward a chunk's replicas (it is active and not dead)."""
        return self.state is NodeState.ACTIVE and self.liveness(now, dead_after) is not Liveness.DEAD

    def reachable(self, now: float, dead_after: float) -> bool:
        """It may still serve its copies (as a repair source, draining nodes included)."""
        return self.liveness(now, dead_after) is not Liveness.DEAD
