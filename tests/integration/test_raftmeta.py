"""In-process tests of a three-replica raftmeta cluster.

Each replica is a ``MetaState`` (SQLite under tmp_path), a ``MetaNode`` (PySyncObj with its
own tick thread, on a free loopback port) and a ``MetaServer`` whose ``serve_conn``,
``_barrier_loop`` and the GC chore (``every``) run in the test's nursery. Clients talk to the servers
through ``raftmeta.client.MetaClient`` over real sockets.

Every test destroys its nodes (and joins their tick threads) before it returns, even when
it fails or times out, so that no PySyncObj thread outlives the trio run that its
callbacks post to.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from blobnode.client import BlobClient
from blobnode.server import BlobServer
from blobnode.store import ChunkStore
from core import wire
from raftmeta.client import MetaClient
from raftmeta.node import MetaNode
from raftmeta.server import MetaServer
from raftmeta.state import MetaState

SECRET = "test-cluster-secret"
GC_GRACE = 0.5
GC_INTERVAL = 0.2


def free_ports(count: int) -> list[int]:
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class Replica:
    name: str
    data_dir: Path
    raft_addr: str
    peers: list[str]
    compaction_entries: int
    rpc_port: int = 0
    state: MetaState | None = None
    node: MetaNode | None = None
    server: MetaServer | None = None
    scope: trio.CancelScope | None = None
    stopped: trio.Event = field(default_factory=trio.Event)
    crash: BaseException | None = None

    @property
    def rpc_addr(self) -> str:
        return f"127.0.0.1:{self.rpc_port}"

    @property
    def running(self) -> bool:
        return self.node is not None

    async def start(self, nursery: trio.Nursery) -> None:
        """Start (or restart, on the same data dir and ports) this replica."""
        assert self.node is None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.state = MetaState(str(self.data_dir / "meta.sqlite"))
        self.node = MetaNode(
            self.raft_addr, self.peers, str(self.data_dir), SECRET, self.state,
            compaction_entries=self.compaction_entries,
        )
        self.server = MetaServer(self.node, self.state, SECRET, gc_grace=GC_GRACE, gc_interval=GC_INTERVAL)
        self.stopped = trio.Event()
        self.crash = None
        listeners = await nursery.start(self._run)
        self.rpc_port = listeners[0].socket.getsockname()[1]

    async def _run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        assert self.server is not None
        try:
            with trio.CancelScope() as self.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.server._barrier_loop)
                    nursery.start_soon(self.server.chores.run, {"gc"})
                    listeners = await nursery.start(
                        partial(trio.serve_tcp, self.server.serve_conn, self.rpc_port, host="127.0.0.1")
                    )
                    task_status.started(listeners)
        except Exception as exc:  # something escaped a handler: this RPC server is dead
            self.crash = exc
        finally:
            self.stopped.set()

    async def stop(self) -> None:
        """Close the RPC server, destroy the Raft node (joining its thread), close SQLite."""
        if self.scope is not None:
            self.scope.cancel()
        with trio.CancelScope(shield=True):
            if self.scope is not None:
                await self.stopped.wait()
            self.kill_node()

    def kill_node(self) -> None:
        node, self.node = self.node, None
        if node is not None:
            node.destroy()
            thread = node._SyncObj__thread
            if thread is not None:
                thread.join(10)
                assert not thread.is_alive(), f"{self.name}: PySyncObj thread did not stop"
        if self.state is not None:
            self.state.close()
            self.state = None


@dataclass
class Cluster:
    replicas: list[Replica]
    nursery: trio.Nursery

    @property
    def addrs(self) -> list[str]:
        return [r.rpc_addr for r in self.replicas]

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.running]

    def client(self, *replicas: Replica) -> MetaClient:
        return MetaClient([r.rpc_addr for r in replicas or self.live()], SECRET)

    async def statuses(self, replicas: list[Replica] | None = None) -> list[dict[str, Any]]:
        out = []
        for r in replicas or self.live():
            out.append(await MetaClient([r.rpc_addr], SECRET).status(r.rpc_addr))
        return out

    async def wait_leader(self, timeout: float = 15.0) -> Replica:
        """Wait until every live replica reports the same single leader and term."""
        live = self.live()
        with trio.fail_after(timeout):
            while True:
                try:
                    sts = await self.statuses(live)
                except wire.WireError:
                    sts = []
                if sts:
                    leaders = [r for r, st in zip(live, sts, strict=True) if st["is_leader"]]
                    if (
                        len(leaders) == 1
                        and len({st["term"] for st in sts}) == 1
                        and {st["leader"] for st in sts} == {leaders[0].raft_addr}
                        and all(st["ready"] for st in sts)
                    ):
                        return leaders[0]
                await trio.sleep(0.05)

    def crashes(self) -> list[str]:
        return [f"{r.name}: {r.crash!r}" for r in self.replicas if r.crash is not None]


@asynccontextmanager
async def open_cluster(root: Path, *, compaction_entries: int = 50_000) -> AsyncIterator[Cluster]:
    raft = [f"127.0.0.1:{p}" for p in free_ports(3)]
    replicas = [
        Replica(
            name=f"meta{i}", data_dir=root / f"meta{i}", raft_addr=raft[i],
            peers=[a for a in raft if a != raft[i]], compaction_entries=compaction_entries,
        )
        for i in range(3)
    ]
    async with trio.open_nursery() as nursery:
        try:
            for r in replicas:
                await r.start(nursery)
            yield Cluster(replicas, nursery)
        finally:
            with trio.CancelScope(shield=True):
                for r in replicas:  # first stop every node, so none keeps electing itself
                    if r.node is not None:
                        r.node.destroy()
                for r in replicas:
                    await r.stop()
            nursery.cancel_scope.cancel()


def snapshot_contents(snapshot: Path, scratch: Path) -> tuple[int, list[str]]:
    """(applied index, object keys) of a raft.snapshot file, read from a copy of it."""
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / f"snapshot-{time.monotonic_ns()}.sqlite"
    shutil.copyfile(snapshot, copy)
    db = sqlite3.connect(copy)
    try:
        index = int(db.execute("SELECT v FROM meta WHERE k='applied'").fetchone()[0])
        keys = [row[0] for row in db.execute("SELECT key FROM objects ORDER BY key")]
    finally:
        db.close()
    return index, keys


def obj(size: int = 0, chunks: list[list[Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "size": size, "etag": f"etag-{size}", "sha256": "0" * 64, "content_type": "application/octet-stream",
        "created": time.time(), "meta": {"user": extra}, "chunks": chunks or [],
    }


async def must(reply_awaitable: Any) -> dict[str, Any]:
    reply = await reply_awaitable
    assert reply.get("ok"), reply
    return reply


async def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> float:
    """Poll an async or sync predicate; return the seconds it took."""
    start = time.monotonic()
    while True:
        value = predicate()
        if hasattr(value, "__await__"):
            value = await value
        if value:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await trio.sleep(step)


# ---------------------------------------------------------------------- tests


async def test_writes_through_every_server_and_linearizable_reads(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_cluster(tmp_path) as cluster:
            leader = await cluster.wait_leader()
            via = [cluster.client(r) for r in cluster.replicas]  # one server each
            await must(via[1].write({"op": "create_bucket", "bucket": "b", "owner": "alice", "ts": time.time()}))

            versions: dict[str, int] = {}
            for i in range(50):
                w = i % 3
                key = f"k{i:03d}"
                reply = await must(via[w].write({
                    "op": "put_object", "bucket": "b", "key": key, "obj": obj(i, writer=w), "ts": time.time(),
                }))
                versions[key] = reply["version"]
                # read-after-write: every server, starting with the one that took the write
                for r in (w, (w + 1) % 3, (w + 2) % 3):
                    got = await must(via[r].read({"q": "object", "bucket": "b", "key": key}))
                    assert got["obj"]["size"] == i and got["obj"]["version"] == reply["version"], (i, r)
                    assert got["obj"]["meta"] == {"user": {"writer": w}}
            # many concurrent linearizable reads (they share barriers) right after one more write
            last = await must(via[0].write({"op": "put_object", "bucket": "b", "key": "k000", "obj": obj(1000),
                                            "ts": time.time()}))
            seen: list[int] = []

            async def read_latest(server: MetaClient) -> None:
                got = await must(server.read({"q": "object", "bucket": "b", "key": "k000"}))
                seen.append(got["obj"]["version"])

            async with trio.open_nursery() as readers:
                for n in range(60):
                    readers.start_soon(read_latest, cluster.client(cluster.replicas[n % 3]))
            assert seen == [last["version"]] * 60
            # versions are the Raft indexes of the commits: strictly increasing in commit order
            in_order = [*versions.values(), last["version"]]
            assert in_order == sorted(set(in_order)), in_order
            versions["k000"] = last["version"]

            for r in range(3):
                stats = await must(via[r].read({"q": "stats"}))
                assert (stats["buckets"], stats["objects"]) == (1, 50)
                assert stats["bytes"] == sum(range(1, 50)) + 1000
                listing = await must(via[r].read({"q": "list", "bucket": "b", "max_keys": 1000}))
                assert [c["key"] for c in listing["contents"]] == sorted(versions)

            sts = await cluster.statuses()
            assert [st["is_leader"] for st in sts].count(True) == 1
            assert sts[cluster.replicas.index(leader)]["is_leader"]
            assert len({st["term"] for st in sts}) == 1 and sts[0]["term"] >= 1
            assert {st["leader"] for st in sts} == {leader.raft_addr}
            assert [st["self"] for st in sts] == [r.raft_addr for r in cluster.replicas]
            for st in sts:
                assert st["journal_syncs"] > 0, st  # the durable journal really synced
                assert st["commit_index"] >= 51
                assert st["state_applied"] >= max(versions.values())
            assert not cluster.crashes()


async def test_same_rid_returns_first_result(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_cluster(tmp_path) as cluster:
            await cluster.wait_leader()
            via = [cluster.client(r) for r in cluster.replicas]
            ts = time.time()

            rid = os.urandom(16)
            create = {"op": "create_bucket", "bucket": "r", "owner": "alice", "ts": ts}
            first = await via[0].call({"op": "write", "cmd": dict(create), "rid": rid})
            assert first == {"ok": True}
            # the same request retried through another server: the first result, once
            again = await via[1].call({"op": "write", "cmd": dict(create), "rid": rid})
            assert again == {"ok": True, "retried": True}
            # a new rid is a new command
            fresh = await via[2].call({"op": "write", "cmd": dict(create), "rid": os.urandom(16)})
            assert fresh["ok"] is False and fresh["err"] == "BucketAlreadyOwnedByYou"

            rid = os.urandom(16)
            put = {"op": "put_object", "bucket": "r", "key": "x", "obj": obj(1), "ts": ts}
            first = await must(via[2].call({"op": "write", "cmd": dict(put), "rid": rid}))
            await must(via[0].write({"op": "put_object", "bucket": "r", "key": "y", "obj": obj(2), "ts": ts}))
            for server in via:
                again = await must(server.call({"op": "write", "cmd": dict(put), "rid": rid}))
                assert again == {**first, "retried": True}
            for server in via:
                got = await must(server.read({"q": "object", "bucket": "r", "key": "x"}))
                assert got["obj"]["version"] == first["version"]  # applied once, not re-applied
                stats = await must(server.read({"q": "stats"}))
                assert stats["objects"] == 2 and stats["gc_queue"] == 0

            # a failed command is remembered too
            rid = os.urandom(16)
            steal = {"op": "create_bucket", "bucket": "r", "owner": "mallory", "ts": ts}
            first = await via[0].call({"op": "write", "cmd": dict(steal), "rid": rid})
            assert first["ok"] is False and first["err"] == "BucketAlreadyExists"
            again = await via[1].call({"op": "write", "cmd": dict(steal), "rid": rid})
            assert again == {**first, "retried": True}

            # a command that blows up inside apply is answered, and does not wedge the replicas
            broken = await via[1].write({"op": "create_bucket", "bucket": "no-owner-no-ts"})
            assert broken["ok"] is False and broken["err"] == "Internal"
            unknown = await via[2].write({"op": "no-such-command"})
            assert unknown["ok"] is False and unknown["err"] == "BadRequest"
            await must(via[0].write({"op": "create_bucket", "bucket": "after", "owner": "alice", "ts": ts}))
            # malformed reads that are answered with BadRequest, the connection staying usable
            for q in ({"q": "object", "bucket": "r"}, {"q": "no-such-query"}, {"q": "list", "bucket": "r",
                                                                             "max_keys": "ten"}):
                for linear in (False, True):
                    bad = await via[2].read(q, linear=linear)
                    assert bad["ok"] is False and bad["err"] == "BadRequest", (q, bad)
            for request in ({"op": "read"}, {"op": "write"}, {"op": "nope"}):
                bad = await via[0].call(request)
                assert bad["ok"] is False and bad["err"] == "BadRequest", (request, bad)
            for server in via:
                buckets = await must(server.read({"q": "buckets"}))
                assert [b[0] for b in buckets["buckets"]] == ["after", "r"]
            assert not cluster.crashes()


async def test_leader_failover(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_cluster(tmp_path) as cluster:
            old_leader = await cluster.wait_leader()
            old_term = (await cluster.statuses([old_leader]))[0]["term"]
            client = MetaClient(cluster.addrs, SECRET)
            await must(client.write({"op": "create_bucket", "bucket": "f", "owner": "alice", "ts": time.time()}))
            for i in range(10):
                await must(client.write({"op": "put_object", "bucket": "f", "key": f"before{i}", "obj": obj(i),
                                         "ts": time.time()}))

            t0 = time.monotonic()
            await old_leader.stop()  # closes its RPC server, destroys its MetaNode
            reply = await client.write(
                {"op": "put_object", "bucket": "f", "key": "after", "obj": obj(99), "ts": time.time()}, deadline=30,
            )
            failover = time.monotonic() - t0
            print(f"\nraftmeta failover: first write committed {failover:.2f}s after the leader was destroyed")
            assert reply.get("ok"), reply
            assert failover < 10.0, f"writes resumed only after {failover:.2f}s"

            survivors = [r for r in cluster.replicas if r is not old_leader]
            new_leader = await cluster.wait_leader()
            assert new_leader in survivors
            sts = await cluster.statuses(survivors)
            assert all(st["term"] > old_term for st in sts)
            # writes through each survivor, reads through each survivor see everything
            for r in survivors:
                await must(cluster.client(r).write({"op": "put_object", "bucket": "f", "key": f"via-{r.name}",
                                                    "obj": obj(1), "ts": time.time()}))
            for r in survivors:
                listing = await must(cluster.client(r).read({"q": "list", "bucket": "f"}))
                keys = [c["key"] for c in listing["contents"]]
                assert keys == sorted(["after", *(f"before{i}" for i in range(10)), *(f"via-{s.name}" for s in survivors)])
            assert not cluster.crashes()


async def test_leader_lease_reads(tmp_path: Path) -> None:
    """The leader answers linearizable reads from its lease, a follower through a barrier;
    a follower that hears from its leader ignores vote requests (which is what makes the
    lease safe); and a leader whose followers are gone loses its lease within the lease
    time, so it can no longer answer a read from its own state."""
    with trio.fail_after(60):
        async with open_cluster(tmp_path) as cluster:
            leader = await cluster.wait_leader()
            follower = next(r for r in cluster.replicas if r is not leader)
            via_leader, via_follower = cluster.client(leader), cluster.client(follower)
            await must(via_leader.write({"op": "create_bucket", "bucket": "l", "owner": "o", "ts": time.time()}))
            await wait_until(lambda: leader.node.lease_read_index() is not None, 5, "the leader's lease")
            before = dict(leader.server.reads)
            for i in range(20):
                await must(via_follower.write({"op": "put_object", "bucket": "l", "key": f"k{i}", "obj": obj(i),
                                               "ts": time.time()}))
                got = await must(via_leader.read({"q": "object", "bucket": "l", "key": f"k{i}"}))
                assert got["obj"]["size"] == i  # written through another node, seen at once
            assert leader.server.reads["lease"] - before["lease"] == 20
            assert leader.server.reads["barrier"] == before["barrier"]
            follower_barriers = follower.server.reads["barrier"]
            await must(via_follower.read({"q": "object", "bucket": "l", "key": "k0"}))
            assert follower.server.reads["barrier"] == follower_barriers + 1

            # a vote request at a higher term, while the leader is heard: ignored entirely
            term = follower.node.raftCurrentTerm
            other = next(iter(follower.node.otherNodes))
            follower.node._SyncObj__onMessageReceived(other, {
                "type": "request_vote", "term": term + 5, "last_log_index": 1 << 40, "last_log_term": term + 5})
            assert follower.node.raftCurrentTerm == term
            assert follower.node._getLeader() is not None

            for r in cluster.replicas:
                if r is not leader:
                    await r.stop()
            t0 = time.monotonic()
            await wait_until(lambda: leader.node.lease_read_index() is None, 2, "the lease to expire")
            lost = time.monotonic() - t0
            print(f"\nlease lost {lost:.2f}s after the followers stopped")
            assert lost < 0.5
            with pytest.raises(wire.WireError):  # no majority: a barrier cannot commit
                await via_leader.read({"q": "object", "bucket": "l", "key": "k0"}, deadline=3)
            assert not cluster.crashes()


@pytest.mark.parametrize("who", ["follower", "leader"])
async def test_restarted_replica_catches_up(tmp_path: Path, who: str) -> None:
    with trio.fail_after(60):
        async with open_cluster(tmp_path) as cluster:
            leader = await cluster.wait_leader()
            client = MetaClient(cluster.addrs, SECRET)
            await must(client.write({"op": "create_bucket", "bucket": "c", "owner": "alice", "ts": time.time()}))
            for i in range(20):
                await must(client.write({"op": "put_object", "bucket": "c", "key": f"a{i:02d}", "obj": obj(i),
                                         "ts": time.time()}))
            follower = leader if who == "leader" else next(r for r in cluster.replicas if r is not leader)
            rpc_port = follower.rpc_port
            await follower.stop()

            # the cluster moves on without it
            await must(client.write({"op": "create_bucket", "bucket": "d", "owner": "bob", "ts": time.time()}))
            for i in range(20):
                await must(client.write({"op": "put_object", "bucket": "c", "key": f"b{i:02d}", "obj": obj(100 + i),
                                         "ts": time.time()}))
            await must(client.write({"op": "delete_object", "bucket": "c", "key": "a00", "ts": time.time()}))
            leader = await cluster.wait_leader()
            assert leader is not follower
            leader_applied = (await cluster.statuses([leader]))[0]["last_applied"]

            # same data dir (journal, SQLite), same Raft and RPC ports
            await follower.start(cluster.nursery)
            assert follower.rpc_port == rpc_port
            await wait_until(
                lambda: follower.state is not None and follower.state.last_applied >= leader_applied,
                20, "the restarted replica to apply the log",
            )
            await cluster.wait_leader()
            only = cluster.client(follower)
            for linear in (True, False):
                buckets = await must(only.read({"q": "buckets"}, linear=linear))
                assert [b[0] for b in buckets["buckets"]] == ["c", "d"]
                listing = await must(only.read({"q": "list", "bucket": "c", "max_keys": 1000}, linear=linear))
                expected = [f"a{i:02d}" for i in range(1, 20)] + [f"b{i:02d}" for i in range(20)]
                assert [c["key"] for c in listing["contents"]] == expected
                got = await must(only.read({"q": "object", "bucket": "c", "key": "b07"}, linear=linear))
                assert got["obj"]["size"] == 107
                gone = await only.read({"q": "object", "bucket": "c", "key": "a00"}, linear=linear)
                assert gone["ok"] is False and gone["err"] == "NoSuchKey"
            # and it takes writes again
            await must(only.write({"op": "put_object", "bucket": "c", "key": "z", "obj": obj(5), "ts": time.time()}))
            for r in cluster.replicas:
                got = await must(cluster.client(r).read({"q": "object", "bucket": "c", "key": "z"}))
                assert got["obj"]["size"] == 5
            assert not cluster.crashes()


async def test_snapshots(tmp_path: Path) -> None:
    """With compaction after 50 entries, ~200 writes leave snapshot files and a compacted log.
    A replica restarted alone (no peer up) with its SQLite file deleted rebuilds the whole
    state from its own snapshot; a replica that was down while the others compacted is
    brought up to date by the leader sending it a snapshot."""
    with trio.fail_after(60):
        async with open_cluster(tmp_path, compaction_entries=50) as cluster:
            leader = await cluster.wait_leader()
            client = MetaClient(cluster.addrs, SECRET)
            await must(client.write({"op": "create_bucket", "bucket": "s", "owner": "alice", "ts": time.time()}))
            for i in range(5):
                await must(client.write({"op": "put_object", "bucket": "s", "key": f"k{i:03d}", "obj": obj(i),
                                         "ts": time.time()}))
            absent, rebuilt = [r for r in cluster.replicas if r is not leader]
            absent_applied = (await cluster.statuses([absent]))[0]["last_applied"]
            await absent.stop()  # down while the others compact their logs
            assert not (absent.data_dir / "raft.snapshot").exists()

            live = [leader, rebuilt]
            live_client = cluster.client(*live)
            for i in range(5, 200):
                await must(live_client.write({"op": "put_object", "bucket": "s", "key": f"k{i:03d}", "obj": obj(i),
                                              "ts": time.time()}))
            await wait_until(
                lambda: all((r.data_dir / "raft.snapshot").is_file() for r in live), 15, "snapshot files",
            )
            sts = await cluster.statuses(live)
            for st in sts:  # the logs were compacted past what the absent replica has
                assert st["log_size"] < 150 and st["commit_index"] - st["log_size"] > absent_applied, st
            expected = [f"k{i:03d}" for i in range(200)]

            # 1. everything down; `rebuilt` comes back alone, its SQLite database deleted
            for r in live:
                await r.stop()
            snap_index, snap_keys = snapshot_contents(rebuilt.data_dir / "raft.snapshot", tmp_path / "copy")
            assert snap_keys == expected[: len(snap_keys)] and len(snap_keys) > 100
            for suffix in ("", "-wal", "-shm"):
                (rebuilt.data_dir / f"meta.sqlite{suffix}").unlink(missing_ok=True)
            await rebuilt.start(cluster.nursery)
            alone = cluster.client(rebuilt)

            # wait on `status` (which does not touch SQLite): a read racing the restore can crash the
            # server, see test_non_linear_reads_during_snapshot_restore
            async def restored() -> bool:
                return (await alone.status(rebuilt.rpc_addr))["state_applied"] >= snap_index

            await wait_until(restored, 10, "the state restored from the local snapshot")
            listing = await must(alone.read({"q": "list", "bucket": "s", "max_keys": 1000}, linear=False))
            keys = [c["key"] for c in listing["contents"]]
            # no peer is up: all of it came from the snapshot (and the tail of the local journal)
            assert keys == expected[: len(keys)] and len(keys) >= len(snap_keys)
            got = await must(alone.read({"q": "object", "bucket": "s", "key": "k050"}, linear=False))
            assert got["obj"]["size"] == 50

            # 2. quorum again; the absent replica can only be caught up by a snapshot transfer
            await leader.start(cluster.nursery)
            await cluster.wait_leader()
            await absent.start(cluster.nursery)
            listing = await must(cluster.client(absent).read({"q": "list", "bucket": "s", "max_keys": 1000},
                                                             deadline=30))
            assert [c["key"] for c in listing["contents"]] == expected
            assert (absent.data_dir / "raft.snapshot").is_file()  # received from the leader
            await cluster.wait_leader()
            for r in cluster.replicas:
                stats = await must(cluster.client(r).read({"q": "stats"}))
                assert stats["objects"] == 200, (r.name, stats)
            await must(client.write({"op": "put_object", "bucket": "s", "key": "last", "obj": obj(1),
                                     "ts": time.time()}))
            for r in cluster.replicas:
                got = await must(cluster.client(r).read({"q": "object", "bucket": "s", "key": "last"}))
                assert got["obj"]["size"] == 1
            assert not cluster.crashes()


async def _reads_across_snapshot_restores(root: Path, attempts: int = 8) -> list[str]:
    """Restart a replica alone, its SQLite file deleted, so that it restores its snapshot while
    three readers send non-linear reads; repeat up to ``attempts`` times. Returns what went
    wrong (nothing, if the replica kept serving). Prints the result as JSON before the
    cluster is torn down (a failure can leave this process damaged)."""
    problems: list[str] = []
    with trio.fail_after(90):
        async with open_cluster(root, compaction_entries=50) as cluster:
            leader = await cluster.wait_leader()
            client = MetaClient(cluster.addrs, SECRET)
            await must(client.write({"op": "create_bucket", "bucket": "s", "owner": "alice", "ts": time.time()}))
            for i in range(200):
                await must(client.write({"op": "put_object", "bucket": "s", "key": f"k{i:03d}",
                                         "obj": obj(i, pad="x" * 2000), "ts": time.time()}))
            victim = next(r for r in cluster.replicas if r is not leader)
            await wait_until(lambda: (victim.data_dir / "raft.snapshot").is_file(), 15, "a snapshot")
            for r in cluster.replicas:
                await r.stop()
            snap_index, _ = snapshot_contents(victim.data_dir / "raft.snapshot", root / "copy")

            for attempt in range(1, attempts + 1):
                for suffix in ("", "-wal", "-shm"):
                    (victim.data_dir / f"meta.sqlite{suffix}").unlink(missing_ok=True)
                await victim.start(cluster.nursery)  # its Raft thread restores the snapshot ~0.1 s from now
                answered: list[bool] = []

                async def reader_loop(answered: list[bool] = answered) -> None:
                    reader = MetaClient([victim.rpc_addr], SECRET)
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline and not cluster.crashes():
                        try:
                            reply = await reader._call_once(victim.rpc_addr, {
                                "op": "read", "q": {"q": "list", "bucket": "s", "max_keys": 1000}, "linear": False})
                        except wire.WireError as exc:
                            problems.append(f"read {len(answered) + 1} failed: {exc!r}")
                            return
                        answered.append(bool(reply.get("ok")))
                        if answered[-10:] == [True] * 10:
                            return  # restored, and served well after that
                        await trio.sleep(0.005)

                async with trio.open_nursery() as readers:
                    for _ in range(3):
                        readers.start_soon(reader_loop)
                problems.extend(cluster.crashes())
                try:
                    with trio.fail_after(5):
                        status = await MetaClient([victim.rpc_addr], SECRET).status(victim.rpc_addr)
                    if status["state_applied"] < snap_index:
                        problems.append(f"snapshot not restored: {status}")
                except (wire.WireError, trio.TooSlowError) as exc:
                    problems.append(f"the replica no longer answers: {exc!r}")
                if problems:
                    problems.insert(0, f"attempt {attempt}, after {len(answered)} reads ({answered.count(True)} ok)")
                    break
                await victim.stop()
            print(json.dumps({"problems": problems}), flush=True)
    return problems


async def test_non_linear_reads_during_snapshot_restore(tmp_path: Path) -> None:
    """Frontends read ``nodes`` and ``bucket`` with linear=False; a replica restoring a
    snapshot (at start-up, or a lagging follower sent one by the leader) must keep serving
    them. The scenario runs in a child process: when it goes wrong SQLite is used across
    threads on a closed connection (undefined behaviour), which must not damage this one."""
    script = (
        "import sys, trio; from pathlib import Path; "
        "from tests.integration.test_raftmeta import _reads_across_snapshot_restores as run; "
        "trio.run(run, Path(sys.argv[1]))"
    )
    root = Path(__file__).resolve().parents[2]
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-c", script, str(tmp_path)], cwd=str(root), capture_stdout=True, capture_stderr=True,
            check=False,
        )
    lines = [line for line in done.stdout.decode().splitlines() if line.startswith('{"problems"')]
    if not lines:
        problems = [f"the scenario died (exit {done.returncode}): {done.stderr.decode()[-2000:]}"]
    else:
        problems = json.loads(lines[-1])["problems"]
    assert not problems, problems


async def test_gc_deletes_unreferenced_chunks_from_blob_node(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_cluster(tmp_path / "meta") as cluster:
            # a real blob node, registered through a heartbeat command
            store = ChunkStore(str(tmp_path / "blob"))
            blob_server = BlobServer(store, SECRET)
            listeners = await cluster.nursery.start(
                partial(trio.serve_tcp, blob_server.serve_conn, 0, host="127.0.0.1")
            )
            blob_addr = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
            leader = await cluster.wait_leader()
            client = MetaClient(cluster.addrs, SECRET)
            await must(client.write({
                "op": "node_heartbeat", "node_id": store.node_id, "addr": blob_addr, "capacity": 10**12,
                "used": 0, "chunks": 0, "ts": time.time(),
            }))
            nodes = await must(client.read({"q": "nodes"}))
            assert [(n["node_id"], n["addr"]) for n in nodes["nodes"]] == [(store.node_id, blob_addr)]

            blobs = BlobClient(SECRET)
            chunks: dict[str, list[Any]] = {}
            for name in ("old", "shared", "new"):
                data = os.urandom(1000)
                cid = os.urandom(16).hex()
                sha = hashlib.sha256(data).hexdigest()
                assert await blobs.put(blob_addr, cid, sha, data)
                chunks[name] = [cid, len(data), sha, [store.node_id]]

            def on_disk(name: str) -> bool:
                return os.path.exists(store.path(chunks[name][0]))

            await must(client.write({"op": "create_bucket", "bucket": "g", "owner": "alice", "ts": time.time()}))
            await must(client.write({"op": "put_object", "bucket": "g", "key": "obj",
                                     "obj": obj(2000, [chunks["old"], chunks["shared"]]), "ts": time.time()}))
            # the overwrite is stamped 1 s ahead (a frontend clock a little fast), so the queue can be
            # observed before the grace period of the queued chunk has passed
            queued_at = time.time() + 1.0
            await must(client.write({"op": "put_object", "bucket": "g", "key": "obj",
                                     "obj": obj(2000, [chunks["shared"], chunks["new"]]), "ts": queued_at}))
            pending = await must(client.read({"q": "gc_pending", "before": 1e18}))
            assert [(item[1], item[2]) for item in pending["items"]] == [(chunks["old"][0], [store.node_id])]
            assert pending["total"] == 1  # "shared" is still referenced: not queued
            assert on_disk("old")

            took = await wait_until(lambda: not on_disk("old"), 10, "gc to delete the old chunk", step=0.02)
            assert time.time() >= queued_at + GC_GRACE  # not before the grace period
            print(f"\ngc deleted the overwritten chunk {took:.2f}s after it was queued (1 s ahead + {GC_GRACE} s grace)")

            async def queue_empty() -> bool:
                reply = await must(client.read({"q": "gc_pending", "before": 1e18}))
                return reply["items"] == [] and reply["total"] == 0

            await wait_until(queue_empty, 5, "gc_done to empty the queue")
            assert on_disk("shared") and on_disk("new")
            _, data = await blobs.get(blob_addr, chunks["shared"][0])
            assert hashlib.sha256(data).hexdigest() == chunks["shared"][2]

            # deleting the object queues the rest; gc removes them within a few seconds
            await must(client.write({"op": "delete_object", "bucket": "g", "key": "obj", "ts": time.time()}))
            took = await wait_until(lambda: not on_disk("shared") and not on_disk("new"), 10,
                                    "gc after delete_object", step=0.02)
            print(f"gc deleted the chunks of a deleted object within {took:.2f}s")
            await wait_until(queue_empty, 5, "an empty gc queue")
            assert await blobs.list_all(blob_addr) == []
            assert (await blobs.info(blob_addr))["chunks"] == 0

            sts = await cluster.statuses()
            deleted = {r.name: st["gc_deleted"] for r, st in zip(cluster.live(), sts, strict=True)}
            assert sum(deleted.values()) == 3, deleted
            assert deleted[leader.name] == 3, deleted  # only the leader collects
            assert not cluster.crashes()


BAD_READS = {
    # MetaState.query looks the handler up outside its try: an unhashable query name is a TypeError
    "unhashable-query-name": {"op": "read", "q": {"q": ["object"]}, "linear": False},
    # a parameter SQLite cannot bind: sqlite3.ProgrammingError, not one of the errors query() catches
    "dict-parameter": {"op": "read", "q": {"q": "bucket", "bucket": {"x": 1}}, "linear": False},
    "list-parameter": {"op": "read", "q": {"q": "list", "bucket": ["x"]}, "linear": False},
    # an integer msgpack carries but SQLite cannot store: OverflowError (an ArithmeticError)
    "int-too-large": {"op": "read", "q": {"q": "gc_pending", "before": 2**63}, "linear": False},
}


@pytest.mark.parametrize("case", [*BAD_READS, "pre-auth-garbage"])
async def test_malformed_request_does_not_crash_rpc_server(tmp_path: Path, case: str) -> None:
    with trio.fail_after(60):
        async with open_cluster(tmp_path) as cluster:
            await cluster.wait_leader()
            target = cluster.replicas[0]
            conn = await wire.connect(target.rpc_addr)
            if case == "pre-auth-garbage":
                await conn.sock.send(b"\x00\x00\x00\x05hello")
                expected_err = None
            else:
                await wire.client_handshake(conn, SECRET)
                await conn.send(BAD_READS[case])
                expected_err = wire.ERR_BAD_REQUEST
            try:
                with trio.fail_after(5):
                    reply = await conn.recv_header()
                    if case == "pre-auth-garbage":
                        reply = await conn.recv_header()  # after the challenge: the refusal
            except wire.WireError as exc:
                reply = {"connection": repr(exc)}
            conn.close()
            await trio.sleep(0.2)
            crashes = cluster.crashes()
            try:
                status = await MetaClient([target.rpc_addr], SECRET).status(target.rpc_addr)
            except wire.WireError as exc:
                status = {"error": repr(exc)}
    assert not crashes, f"reply {reply!r}; crashed: {crashes}"
    if expected_err is not None:
        assert reply is not None and reply.get("ok") is False and reply.get("err") == expected_err, reply
    assert status.get("ok") is True, status
