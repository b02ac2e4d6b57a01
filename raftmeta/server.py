"""The raftmeta process: a Raft replica, its msgpack RPC server, and leader-only chores.

RPC (framing and op names in ``core.wire``):
- ``write``: propose ``cmd`` through Raft (a follower's PySyncObj forwards it to the
  leader) and answer with the state machine's result once it is committed and applied.
- ``read``: answer ``q`` from the local SQLite replica; with ``linear`` (the default)
  only after a Raft barrier proposed after the request arrived has been applied here,
  so the read sees every write acknowledged before it (linearizable). Concurrent reads
  share one barrier.
- ``status``: Raft role, term, leader, indexes, journal syncs.

The garbage collector runs beside the Raft leader only: it deletes queued chunks from
blob nodes once their grace period has passed, then records that through Raft.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import trio
from pysyncobj import FAIL_REASON

from blobnode.client import BlobClient
from core import wire
from raftmeta.node import MetaNode
from raftmeta.sm import multipart
from raftmeta.state import MetaState

log = logging.getLogger("raftmeta")

PROPOSE_TIMEOUT = 5.0
REPAIRS_IN_FLIGHT = 4  # chunk copies node to node at once (each its own source and target disks)


@dataclass
class _Batch:
    done: trio.Event = field(default_factory=trio.Event)
    result: dict[str, Any] | None = None


class MetaServer:
    def __init__(
        self, node: MetaNode, state: MetaState, secret: str, *, gc_grace: float, gc_interval: float,
        upload_ttl: float = 86400.0, expiry_interval: float = 60.0,
        replicas: int = 3, dead_after: float = 600.0, repair_interval: float = 10.0, repair_rate: float = 50.0,
        orphan_grace: float = 21600.0, orphan_interval: float = 600.0,
    ) -> None:
        self.node = node
        self.state = state
        self.secret = secret
        self.gc_grace = gc_grace
        self.gc_interval = gc_interval
        self.token = trio.lowlevel.current_trio_token()
        self._batch = _Batch()
        self._barrier_wanted = trio.Event()
        self.reads = {"lease": 0, "barrier": 0}  # how linearizable reads were served
        self.blobs = BlobClient(secret)
        self._paced_until = 0.0  # when the repair rate limit lets the next chunk copy start
        self.gc_deleted = 0
        self.expiry: dict[str, Any] = {"ttl": upload_ttl, "interval": expiry_interval, "last_run": None,
                                       "last_aborted": 0, "aborted_total": 0}
        self.orphan: dict[str, Any] = {"grace": orphan_grace, "interval": orphan_interval, "last_run": None,
                                       "deleted_total": 0}
        self.repair: dict[str, Any] = {"replicas": replicas, "dead_after": dead_after, "interval": repair_interval,
                                       "rate_mb_s": repair_rate,
                                       "last_run": None, "last_under_replicated": 0, "repaired_total": 0,
                                       "bytes_total": 0, "dead_nodes": [],
                                       # progress of the pass under way: what it found, what it did
                                       "backlog_chunks": 0, "backlog_bytes": 0, "pass_bytes": 0,
                                       "pass_started": None, "rate_bytes_s": None, "eta_s": None}

    # ---------------------------------------------------------------- raft calls

    async def propose(self, cmd: dict[str, Any], timeout: float = PROPOSE_TIMEOUT) -> dict[str, Any]:
        done = trio.Event()
        box: list[Any] = []
        token = self.token

        def callback(result: Any, error: int) -> None:  # runs on the Raft thread
            box.append((result, error))
            token.run_sync_soon(done.set)

        was_leader = self.node._isLeader()
        self.node.apply_cmd(msgpack.packb(cmd, use_bin_type=True), callback=callback)
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

    async def every(self, interval: float, chore: Callable[[], Awaitable[int]]) -> None:
        """Run a leader chore every ``interval`` seconds (each chore checks leadership)."""
        while True:
            await trio.sleep(interval)
            try:
                await chore()
            except Exception:
                log.exception("%s failed", chore.__name__)

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
            return await self.propose(cmd)
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
            return await self.members()
        if op == "membership":
            return await self.change_membership(request.get("action"), request.get("raft"))
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
            "gc_deleted": self.gc_deleted,
            "lease": self.node.lease_read_index() is not None,
            "reads": dict(self.reads),
        }

    # ---------------------------------------------------------------- membership

    async def members(self) -> dict[str, Any]:
        """The voting members this node knows (PySyncObj's view) and their RPC addresses."""
        raft = sorted([self.node.selfNode.address, *(n.address for n in self.node.otherNodes)])
        rpc = self.state.query({"q": "member_rpcs"})["rpc"]
        leader = self.node._getLeader()
        return {"ok": True, "members": [{"raft": r, "rpc": rpc.get(r)} for r in raft],
                "leader_rpc": rpc.get(leader.address) if leader is not None else None}

    async def change_membership(self, action: Any, raft: Any) -> dict[str, Any]:
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
                if self.node._getLeader() is not None and self.state.query({"q": "member_rpcs"})["rpc"].get(me) != rpc:
                    await self.propose({"op": "member_rpc", "raft": me, "rpc": rpc})
            except Exception:
                log.exception("cannot record this node's RPC address")
            await trio.sleep(2.0)

    async def serve_conn(self, stream: trio.SocketStream) -> None:
        async def reply(conn: wire.FramedSocket, request: dict[str, Any]) -> None:
            await conn.send(await self.handle(request))

        await wire.serve_connection(stream, self.secret, reply)

    # ---------------------------------------------------------------- repair

    async def repair_pass(self, budget: int = 500) -> int:
        """Bring chunks back to ``replicas`` healthy copies, node to node. Leader only.
        A node silent for ``dead_after`` seconds no longer counts as a replica."""
        if not self.node._isLeader():
            return 0
        now = time.time()
        nodes = self.state.query({"q": "nodes"})["nodes"]
        reachable = {n["node_id"]: n for n in nodes if now - n["heartbeat"] < self.repair["dead_after"]}
        alive = {i: n for i, n in reachable.items() if n["state"] == "active"}  # where replicas count
        self.repair["dead_nodes"] = sorted(n["node_id"] for n in nodes if n["node_id"] not in reachable)
        todo = self._measure_backlog(list(alive), budget)
        pass_started = time.monotonic()
        self._paced_until = max(self._paced_until, pass_started)
        counts = {"repaired": 0}
        slots = trio.Semaphore(REPAIRS_IN_FLIGHT)

        async def repair_one(item: list[Any]) -> None:
            try:
                if await self._repair_chunk(item, alive, reachable, pass_started):
                    counts["repaired"] += 1
            finally:
                slots.release()

        async with trio.open_nursery() as nursery:
            for item in todo:
                await slots.acquire()
                nursery.start_soon(repair_one, item)
        repaired, under = counts["repaired"], self.repair["backlog_chunks"]
        self.repair.update(last_run=time.time(), repaired_total=self.repair["repaired_total"] + repaired)
        if repaired:
            log.info("repair: %d chunks re-replicated (%d under-replicated seen)", repaired, under)
        return repaired

    async def _repair_chunk(self, item: list[Any], alive: dict[str, Any], reachable: dict[str, Any],
                            pass_started: float) -> bool:
        """Copy one under-replicated chunk onto spare nodes and record the new replica
        set; True if a replica was added and recorded."""
        bucket, key, version, chunk, size, sha256, replicas = item
        healthy = [n for n in replicas if n in alive]
        sources = healthy + [n for n in replicas if n in reachable and n not in alive]  # + draining
        if not sources:
            log.error("chunk %s of %s/%s has no live replica", chunk, bucket, key)
            return False
        spares = sorted((n for n in alive.values() if n["node_id"] not in healthy
                         and n["capacity"] - n["used"] >= size),  # a full disk takes no repairs
                        key=lambda n: n["capacity"] - n["used"], reverse=True)
        added = []
        for target in spares[: self.repair["replicas"] - len(healthy)]:
            # the rate limit, shared by the pulls in flight: client traffic keeps the disks first
            now = time.monotonic()
            start_at = self._paced_until
            self._paced_until = max(now, start_at) + size / (self.repair["rate_mb_s"] * 1e6)
            await trio.sleep(max(0.0, start_at - now))
            try:
                await self.blobs.pull(target["addr"], chunk, sha256, reachable[sources[0]]["addr"])
            except (wire.WireError, OSError) as exc:
                log.warning("repair of chunk %s onto %s failed: %s", chunk, target["node_id"], exc)
                continue
            added.append(target["node_id"])
            self.repair["bytes_total"] += size
            self._progress(size, time.monotonic() - pass_started)
        keep = healthy + added
        if len(keep) < self.repair["replicas"]:  # a draining copy leaves only once replaced
            keep += [n for n in sources if n not in keep]
        if set(keep) == set(replicas):
            return False
        result = await self.propose({"op": "set_replicas", "bucket": bucket, "key": key,
                                     "version": version, "chunk": chunk, "nodes": keep})
        return bool(result.get("ok") and added)

    def _measure_backlog(self, alive: list[str], budget: int) -> list[list[Any]]:
        """One scan of the manifests: count what is under-replicated now (chunks, and bytes
        of missing replicas: the denominator of the progress and ETA an operator sees) and
        return the first ``budget`` of those chunks, the work of this pass."""
        want = self.repair["replicas"]
        chunks = missing = 0
        todo: list[list[Any]] = []
        cursor: list[str] = ["", ""]
        while True:
            scan = self.state.query({"q": "repair_scan", "alive": alive, "want": want, "after": cursor,
                                     "limit": 1000})
            if not scan.get("ok"):
                break
            for item in scan["items"]:
                chunks += 1
                missing += item[4] * max(1, want - len([n for n in item[6] if n in alive]))
                if len(todo) < budget:
                    todo.append(item)
            if scan["done"]:
                break
            cursor = scan["next"]
        self.repair.update(backlog_chunks=chunks, backlog_bytes=missing, pass_bytes=0, last_under_replicated=chunks,
                           pass_started=time.time() if chunks else None, rate_bytes_s=None,
                           eta_s=0.0 if not chunks else None)
        return todo

    def _progress(self, size: int, elapsed: float) -> None:
        done = self.repair["pass_bytes"] = self.repair["pass_bytes"] + size
        rate = done / max(elapsed, 1e-3)
        self.repair["rate_bytes_s"] = round(rate)
        self.repair["eta_s"] = round(max(0, self.repair["backlog_bytes"] - done) / rate, 1)

    async def orphan_pass(self) -> int:
        """Delete chunk files that no manifest places on their node and that are older
        than ``orphan_grace`` (written by a frontend that died mid-upload, cut-off slow
        replicas, copies superseded by repair on a node that came back). Leader only."""
        if not self.node._isLeader():
            return 0
        now = time.time()
        deleted = 0
        for node in self.state.query({"q": "nodes"})["nodes"]:
            if now - node["heartbeat"] > 30:
                continue  # not reachable now; its files are looked at when it is back
            refs = set(self.state.query({"q": "node_refs", "node": node["node_id"]})["ids"])
            after, more = "", True
            try:
                while more:
                    ids, more = await self.blobs.list(node["addr"], after, 1000, older_than=now - self.orphan["grace"])
                    orphans = [i for i in ids if i not in refs]
                    if orphans:
                        deleted += await self.blobs.delete(node["addr"], orphans)
                    if ids:
                        after = ids[-1]
            except (wire.WireError, OSError) as exc:
                log.info("orphan sweep of node %s stopped: %s", node["node_id"], exc)
        self.orphan.update(last_run=time.time(), deleted_total=self.orphan["deleted_total"] + deleted)
        if deleted:
            log.info("orphan sweep: %d unreferenced chunk files deleted", deleted)
        return deleted

    # ---------------------------------------------------------------- leader chores

    async def chore(self, name: Any) -> dict[str, Any]:
        """Run or report a leader-only background task now (operators, tests)."""
        if not self.node._isLeader():
            return {"ok": False, "err": wire.ERR_UNAVAILABLE, "msg": "not the Raft leader"}
        if name == "expire_uploads":
            await self.expire_pass()
        elif name == "repair":
            await self.repair_pass()
        elif name == "orphans":
            await self.orphan_pass()
        elif name == "gc":
            await self.gc_pass()
        elif name != "status":
            return {"ok": False, "err": wire.ERR_BAD_REQUEST, "msg": f"unknown chore {name!r}"}
        counts = self.state.query({"q": "expired", "before": time.time() - self.expiry["ttl"]})
        gc = self.state.query({"q": "gc_pending", "before": time.time() - self.gc_grace, "limit": 0})
        return {"ok": True, "leader": self.node.selfNode.address, "uploads": counts["uploads"],
                "expired_waiting": counts["expired"], "expiry": self.expiry, "repair": self.repair,
                "orphans": self.orphan,
                "gc": {"grace": self.gc_grace, "queued": gc["total"], "deleted_total": self.gc_deleted}}

    async def expire_pass(self) -> int:
        """Abort uploads initiated more than ``ttl`` seconds ago. Leader only."""
        if not self.node._isLeader():
            return 0
        aborted = 0
        while True:
            now = time.time()
            result = await self.propose({"op": "expire_uploads", "before": now - self.expiry["ttl"], "ts": now,
                                         "limit": 500})
            if not result.get("ok"):
                break
            aborted += len(result["aborted"])
            if len(result["aborted"]) < 500:
                break
        self.expiry.update(last_run=time.time(), last_aborted=aborted,
                           aborted_total=self.expiry["aborted_total"] + aborted)
        if aborted:
            log.info("aborted %d multipart uploads older than %.0fs", aborted, self.expiry["ttl"])
        return aborted


    async def gc_pass(self) -> int:
        """Delete chunks whose grace period is over from their blob nodes. Leader only."""
        if not self.node._isLeader():
            return 0
        pending = self.state.query({"q": "gc_pending", "before": time.time() - self.gc_grace, "limit": 2000})
        if not pending.get("items"):
            return 0
        addrs = {n["node_id"]: n["addr"] for n in self.state.query({"q": "nodes"})["nodes"]}
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
                await self.blobs.delete(addr, chunks)
            except (wire.WireError, OSError, trio.TooSlowError) as exc:
                log.info("gc: node %s unreachable (%s); will retry", node_id, exc)
                failed_nodes.add(node_id)
        done = [seq for seq, _chunk, nodes in pending["items"] if not failed_nodes.intersection(nodes)]
        if done:
            result = await self.propose({"op": "gc_done", "seqs": done, "ts": time.time()})
            if result.get("ok"):
                self.gc_deleted += len(done)
        return len(done)


async def serve(args: Any) -> None:
    os.makedirs(args.data_dir, exist_ok=True)
    # Cluster-wide like --replicas: every member must be started with the same value.
    multipart.MIN_PART_SIZE = getattr(args, "min_part_size", multipart.MIN_PART_SIZE)
    state = MetaState(os.path.join(args.data_dir, "meta.sqlite"))
    node = MetaNode(args.raft, args.peers, args.data_dir, args.secret, state,
                    sync_journal=not getattr(args, "unsafe_no_journal_sync", False))
    if not node._sync_journal:
        log.warning("--unsafe-no-journal-sync: acknowledged writes can be lost on power loss")
    server = MetaServer(node, state, args.secret, gc_grace=args.gc_grace, gc_interval=args.gc_interval,
                        upload_ttl=args.upload_ttl, expiry_interval=args.upload_expiry_interval,
                        replicas=args.replicas, dead_after=args.dead_after, repair_interval=args.repair_interval,
                        repair_rate=args.repair_rate,
                        orphan_grace=args.orphan_grace, orphan_interval=args.orphan_interval)
    host, port = wire.split_addr(args.rpc)
    log.info("raftmeta %s: raft %s, peers %s, rpc %s", args.data_dir, args.raft, ",".join(args.peers), args.rpc)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server._barrier_loop)
            nursery.start_soon(server.announce_rpc, args.advertise_rpc or args.rpc)
            for interval, chore in ((server.gc_interval, server.gc_pass),
                                    (server.expiry["interval"], server.expire_pass),
                                    (server.repair["interval"], server.repair_pass),
                                    (server.orphan["interval"], server.orphan_pass)):
                nursery.start_soon(server.every, interval, chore)
            await trio.serve_tcp(server.serve_conn, port, host=host)
    finally:
        node.destroy()
