"""Raft membership: the voting members this node knows and their RPC addresses; adding or
removing one member (leader only, one change at a time, PySyncObj's dynamic membership);
recording this node's own RPC address through Raft (``raftmeta.sm.members``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from pysyncobj import FAIL_REASON

from core import wire
from raftmeta.node import MetaNode
from raftmeta.sm.members import LEVEL, LEVEL_BATCH
from raftmeta.state import MetaState

log = logging.getLogger("raftmeta")


class Membership:
    def __init__(self, node: MetaNode, state: MetaState,
                 propose: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]], token: trio.lowlevel.TrioToken) -> None:
        self.node = node
        self.state = state
        self.propose = propose
        self.token = token

    async def members(self) -> dict[str, Any]:
        """The voting members this node knows (PySyncObj's view) and their RPC addresses."""
        raft = sorted([self.node.selfNode.address, *(n.address for n in self.node.otherNodes)])
        rpc = self.state.query({"q": "member_rpcs"})["rpc"]
        leader = self.node._getLeader()
        return {"ok": True, "members": [{"raft": r, "rpc": rpc.get(r)} for r in raft],
                "leader_rpc": rpc.get(leader.address) if leader is not None else None}

    def batching_allowed(self) -> bool:
        """Whether every voting member this node knows has recorded that it applies batch
        entries (``raftmeta.sm.members``). Read from this replica: a member that recorded
        it did so through Raft, and membership changes one member at a time."""
        try:
            raft = [self.node.selfNode.address, *(n.address for n in list(self.node.otherNodes))]
        except RuntimeError:  # the Raft thread changed the set while we copied it
            return False
        levels = self.state.query({"q": "member_rpcs"}).get("level", {})
        return all(levels.get(r, 0) >= LEVEL_BATCH for r in raft)

    async def change(self, action: Any, raft: Any) -> dict[str, Any]:
        """Add or remove one voting member (leader only; PySyncObj allows one change at a
        time). A new member is started first with ``--peers`` naming the current members."""
        if action not in ("add", "remove") or not isinstance(raft, str) or ":" not in raft:
            return {"ok": False, "err": wire.ERR_BAD_REQUEST, "msg": "action add|remove and a raft host:port"}
        if not self.node._isLeader():
            return {"ok": False, "err": wire.ERR_UNAVAILABLE, "msg": "not the Raft leader"}
        if action == "remove" and raft == self.node.selfNode.address:
            return {"ok": False, "err": wire.ERR_BAD_REQUEST, "msg": "the leader cannot remove itself; "
                    "remove it through another node after a leader change"}
        done, box, token = trio.Event(), [], self.token

        def callback(result: Any, error: int) -> None:  # on the Raft thread
            box.append(error)
            token.run_sync_soon(done.set)

        change = self.node.addNodeToCluster if action == "add" else self.node.removeNodeFromCluster
        change(raft, callback=callback)
        with trio.move_on_after(15):
            await done.wait()
        if not box or box[0] != FAIL_REASON.SUCCESS:
            return {"ok": False, "err": wire.ERR_UNAVAILABLE,
                    "msg": f"membership change not committed ({box[0] if box else 'timed out'}); "
                           "is another change still in progress, or the new node not running?"}
        if action == "remove":
            await self.propose({"op": "forget_member", "raft": raft})
        return {"ok": True, **(await self.members())}

    async def announce_rpc(self, rpc: str) -> None:
        """Record this node's RPC address through Raft whenever it is missing or stale
        (at start, and after this node joins a cluster)."""
        me = self.node.selfNode.address
        while True:
            try:
                known = self.state.query({"q": "member_rpcs"})
                if self.node._getLeader() is not None and (known["rpc"].get(me), known["level"].get(me)) != (rpc, LEVEL):
                    await self.propose({"op": "member_rpc", "raft": me, "rpc": rpc, "level": LEVEL})
            except Exception:
                log.exception("cannot record this node's RPC address")
            await trio.sleep(2.0)
