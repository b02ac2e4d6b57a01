"""The raftmeta process: a Raft replica, its msgpack RPC server, and leader-only chores.

RPC (framing and op names in ``core.wire``):
- ``write``: propose ``cmd`` through Raft (a follower's PySyncObj forwards it to the
  leader) and answer with the state machine's result once it is committed and applied;
  commands that arrive while others are being committed share one entry
  (``raftmeta.batcher``).
- ``read``: answer ``q`` from the local SQLite replica; with ``linear`` (the default)
  only after a Raft barrier proposed after the request arrived has been applied here,
  so the read sees every write acknowledged before it (linearizable). Concurrent reads
  share one barrier.
- ``status``: Raft role, term, leader, indexes, journal syncs.

- ``chore``: run a leader chore now and report them all (``raftmeta.chores``).
- ``members`` / ``membership``: the voting members; add or remove one (``raftmeta.membership``).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import trio
from pysyncobj import FAIL_REASON

from blobnode.client import BlobClient
from core import wire
from core.nodes import DEFAULT_DEAD_AFTER
from raftmeta.batcher import IN_FLIGHT, CommitBatcher
from raftmeta.chores import ChoreRunner, Leader
from raftmeta.chores.expiry import UploadExpiry
from raftmeta.chores.gc import GarbageCollector
from raftmeta.chores.lifecycle import Lifecycle
from raftmeta.chores.orphans import OrphanSweep
from raftmeta.chores.repair import Repair
from raftmeta.membership import Membership
from raftmeta.node import MetaNode
from raftmeta.sm import multipart
from raftmeta.snapshots import DatabaseBehind
from raftmeta.state import MetaState

log = logging.getLogger("raftmeta")

PROPOSE_TIMEOUT = 5.0


MAX_CLOCK_AHEAD = 1.0  # seconds a command's ts may be ahead of this node's clock


@dataclass
class _Batch:
    done: trio.Event = field(default_factory=trio.Event)
    result: dict[str, Any] | None = None


class MetaServer:
    """The RPC server of one raftmeta node: proposals, linearizable reads, status; the
    leader's chores (``raftmeta.chores``) and membership (``raftmeta.membership``) are
    its neighbours, not its business."""

    def __init__(
        self, node: MetaNode, state: MetaState, secret: str, *, gc_grace: float, gc_interval: float,
        upload_ttl: float = 86400.0, expiry_interval: float = 60.0,
        replicas: int = 3, dead_after: float = DEFAULT_DEAD_AFTER, repair_interval: float = 10.0,
        repair_rate: float = 50.0, orphan_grace: float = 21600.0, orphan_interval: float = 600.0,
        lifecycle_interval: float = 60.0, lifecycle_day: float = 86400.0, lifecycle_rate: float = 500.0,
        commit_in_flight: int = IN_FLIGHT,
    ) -> None:
        self.node = node
        self.state = state
        self.secret = secret
        self.token = trio.lowlevel.current_trio_token()
        self._batch = _Batch()
        self._barrier_wanted = trio.Event()
        self.reads = {"lease": 0, "barrier": 0}  # how linearizable reads were served
        leader = Leader(node._isLeader, self.propose, state.query, BlobClient(secret))
        self.gc = GarbageCollector(leader, gc_interval, gc_grace)
        self.chores = ChoreRunner(leader, [  # in the order of the ``chore`` reply's keys
            UploadExpiry(leader, expiry_interval, upload_ttl),
            Repair(leader, repair_interval, replicas, dead_after, repair_rate),
            OrphanSweep(leader, orphan_interval, orphan_grace),
            self.gc,
            Lifecycle(leader, lifecycle_interval, lifecycle_day, lifecycle_rate),
        ])
        self.membership = Membership(node, state, self.propose, self.token)
        self.batcher = CommitBatcher(self.propose_packed, self.membership.batching_allowed, PROPOSE_TIMEOUT,
                                     in_flight=commit_in_flight)

    # ---------------------------------------------------------------- raft calls

    async def propose(self, cmd: dict[str, Any], timeout: float = PROPOSE_TIMEOUT) -> dict[str, Any]:
        return await self.propose_packed(msgpack.packb(cmd, use_bin_type=True), timeout)

    async def propose_packed(self, data: bytes, timeout: float = PROPOSE_TIMEOUT) -> dict[str, Any]:
        """Propose one entry (a packed command) and wait for the state machine's reply."""
        done = trio.Event()
        box: list[Any] = []
        token = self.token

        def callback(result: Any, error: int) -> None:  # runs on the Raft thread
            box.append((result, error))
            token.run_sync_soon(done.set)

        was_leader = self.node._isLeader()
        self.node.apply_cmd(data, callback=callback)
        with trio.move_on_after(timeout):
            while not box:
                with trio.move_on_after(0.1):
                    await done.wait()
                if not box and was_leader and not self.node._isLeader():
                    # Stepped down (e.g. partitioned from its majority): the entry's fate is
                    # decided elsewhere. The client retries on another node with the same rid,
                    # which applies it once whether or not this entry survives.
                    return {"ok": False, "err": wire.ERR_UNAVAILABLE, "msg": "lost Raft leadership"}
        if not box:
            return {"ok": False, "err": wire.ERR_UNAVAILABLE, "msg": "commit timed out"}
        result, error = box[0]
        if error != FAIL_REASON.SUCCESS:
            return {"ok": False, "err": wire.ERR_UNAVAILABLE, "msg": f"raft: {error}"}
        return result

    async def linearize(self) -> dict[str, Any]:
        """Wait until this replica's state holds every write acknowledged before the call:
        on a leader with a lease, up to its commit index (no Raft round); else a barrier."""
        index = self.node.lease_read_index()
        if index is None:
            self.reads["barrier"] += 1
            return await self.barrier()
        self.reads["lease"] += 1
        return await self._applied_here(index)

    async def barrier(self) -> dict[str, Any]:
        """Wait until this replica has applied everything committed before the call."""
        batch = self._batch
        self._barrier_wanted.set()
        await batch.done.wait()
        result = batch.result or {"ok": False, "err": wire.ERR_UNAVAILABLE}
        if not result.get("ok"):
            return result
        return await self._applied_here(result["index"])

    async def _applied_here(self, index: int) -> dict[str, Any]:
        """Once this replica has applied entry ``index``: ok, or unavailable after PROPOSE_TIMEOUT."""
        with trio.move_on_after(PROPOSE_TIMEOUT):
            while self.node.raftLastApplied < index:
                await trio.sleep(0.0005)
            return {"ok": True, "index": index}
        return {"ok": False, "err": wire.ERR_UNAVAILABLE, "msg": "replica lagging"}

    async def _barrier_loop(self) -> None:
        while True:
            await self._barrier_wanted.wait()
            self._barrier_wanted = trio.Event()
            batch, self._batch = self._batch, _Batch()
            batch.result = await self.propose({"op": "barrier"})
            batch.done.set()

    # ---------------------------------------------------------------- rpc

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        linear = op in ("write", "read_many") or (op == "read" and request.get("linear", True))
        if linear and self.node._getLeader() is None:
            # electing, or cut off from the majority: send the client to another node now
            return {"ok": False, "err": wire.ERR_UNAVAILABLE, "msg": "no Raft leader known here"}
        if op == "write":
            cmd = request.get("cmd")
            if not isinstance(cmd, dict):
                return {"ok": False, "err": wire.ERR_BAD_REQUEST, "msg": "cmd missing"}
            if request.get("rid") is not None:
                cmd["rid"] = request["rid"]
            ts = cmd.get("ts")
            if isinstance(ts, (int, float)) and ts > time.time() + MAX_CLOCK_AHEAD:
                # Time in commands decides object lock and lifecycle: a client whose clock
                # runs ahead must not bring a retention's end closer. Stamped here, once,
                # before the entry is logged, so every replica applies the same value.
                cmd["ts"] = time.time() + MAX_CLOCK_AHEAD
            return await self.batcher.submit(cmd)
        if op == "read":
            q = request.get("q")
            if not isinstance(q, dict):
                return {"ok": False, "err": wire.ERR_BAD_REQUEST, "msg": "q missing"}
            if request.get("linear", True):
                barrier = await self.linearize()
                if not barrier.get("ok"):
                    return barrier
            return self.state.query(q)
        if op == "read_many":  # several queries behind one barrier
            queries = request.get("qs")
            if not isinstance(queries, list) or not all(isinstance(q, dict) for q in queries):
                return {"ok": False, "err": wire.ERR_BAD_REQUEST, "msg": "qs must be a list of queries"}
            barrier = await self.linearize()
            if not barrier.get("ok"):
                return barrier
            return {"ok": True, "results": [self.state.query(q) for q in queries]}
        if op == "status":
            return {"ok": True, **self.status()}
        if op == "chore":
            return await self.chore(request.get("name"))
        if op == "members":
            return await self.membership.members()
        if op == "membership":
            return await self.membership.change(request.get("action"), request.get("raft"))
        return {"ok": False, "err": wire.ERR_BAD_REQUEST, "msg": f"unknown op {op!r}"}

    def status(self) -> dict[str, Any]:
        leader = self.node._getLeader()
        return {
            "self": self.node.selfNode.address,
            "leader": leader.address if leader is not None else None,
            "is_leader": self.node._isLeader(),
            "term": self.node.raftCurrentTerm,
            "commit_index": self.node.raftCommitIndex,
            "last_applied": self.node.raftLastApplied,
            "state_applied": self.state.last_applied,
            "journal_syncs": self.node.journal_syncs,
            "log_size": self.node._getRaftLogSize(),
            "ready": self.node.isReady(),
            "gc_deleted": self.gc.deleted,
            "lease": self.node.lease_read_index() is not None,
            "reads": dict(self.reads),
            "pre_votes": {"started": self.node.pre_votes_started, "won": self.node.pre_votes_won},
            "batches": {**self.batcher.stats, "allowed": self.membership.batching_allowed()},
            "snapshots": dict(self.node.snapshot_stats),
        }

    async def chore(self, name: Any) -> dict[str, Any]:
        """Run a leader chore now (``status``: none), then report every chore (operators, tests)."""
        if not self.node._isLeader():
            return {"ok": False, "err": wire.ERR_UNAVAILABLE, "msg": "not the Raft leader"}
        if name != "status":
            if name not in self.chores:
                return {"ok": False, "err": wire.ERR_BAD_REQUEST, "msg": f"unknown chore {name!r}"}
            await self.chores.run_now(name)
        return {"ok": True, "leader": self.node.selfNode.address, **(await self.chores.status())}

    async def serve_conn(self, stream: trio.SocketStream) -> None:
        async def reply(conn: wire.FramedSocket, request: dict[str, Any]) -> None:
            await conn.send(await self.handle(request))

        await wire.serve_connection(stream, self.secret, reply)


async def serve(args: Any) -> None:
    os.makedirs(args.data_dir, exist_ok=True)
    # Cluster-wide like --replicas: every member must be started with the same value.
    multipart.MIN_PART_SIZE = getattr(args, "min_part_size", multipart.MIN_PART_SIZE)
    state = MetaState(os.path.join(args.data_dir, "meta.sqlite"))
    try:
        node = MetaNode(args.raft, args.peers, args.data_dir, args.secret, state,
                        sync_journal=not getattr(args, "unsafe_no_journal_sync", False),
                        compaction_entries=getattr(args, "snapshot_entries", 50_000))
    except DatabaseBehind as exc:
        log.error("raftmeta %s cannot start: %s", args.data_dir, exc)
        state.close()
        raise SystemExit(2) from None
    if not node._sync_journal:
        log.warning("--unsafe-no-journal-sync: acknowledged writes can be lost on power loss")
    server = MetaServer(node, state, args.secret, gc_grace=args.gc_grace, gc_interval=args.gc_interval,
                        upload_ttl=args.upload_ttl, expiry_interval=args.upload_expiry_interval,
                        replicas=args.replicas, dead_after=args.dead_after, repair_interval=args.repair_interval,
                        repair_rate=args.repair_rate,
                        orphan_grace=args.orphan_grace, orphan_interval=args.orphan_interval,
                        lifecycle_interval=args.lifecycle_interval, lifecycle_day=args.lifecycle_day_seconds,
                        lifecycle_rate=args.lifecycle_rate,
                        commit_in_flight=getattr(args, "commit_in_flight", IN_FLIGHT))
    host, port = wire.split_addr(args.rpc)
    log.info("raftmeta %s: raft %s, peers %s, rpc %s", args.data_dir, args.raft, ",".join(args.peers), args.rpc)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server._barrier_loop)
            nursery.start_soon(server.batcher.run)
            nursery.start_soon(server.membership.announce_rpc, args.advertise_rpc or args.rpc)
            nursery.start_soon(server.chores.run)
            await trio.serve_tcp(server.serve_conn, port, host=host)
    finally:
        node.destroy()
