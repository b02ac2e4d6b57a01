"""In-process tests of a three-replica raftmeta cluster: writes and linearizable reads
through every server, request-id retries, leader failover, lease reads, malformed requests.

The cluster is ``tests.integration.raftcluster``: three in-process replicas on loopback
ports, each destroyed (its tick thread joined) before the test returns.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import trio

from core import wire
from raftmeta.client import MetaClient
from tests.integration.raftcluster import SECRET, must, obj, open_cluster, wait_until

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


async def test_a_command_from_a_clock_ahead_is_stamped_with_the_servers_time(tmp_path: Path) -> None:
    """Command time decides object lock and lifecycle: a client whose clock runs an hour
    ahead gets the raftmeta node's time (plus a second), on every replica alike."""
    with trio.fail_after(60):
        async with open_cluster(tmp_path) as cluster:
            await cluster.wait_leader()
            client = cluster.client(cluster.replicas[1])
            ahead = time.time() + 3600
            await must(client.write({"op": "create_bucket", "bucket": "future", "owner": "alice", "ts": ahead}))
            await must(client.write({"op": "create_bucket", "bucket": "past", "owner": "alice", "ts": 1000.0}))
            for replica in cluster.replicas:
                got = await must(cluster.client(replica).read({"q": "bucket", "bucket": "future"}))
                assert got["created"] <= time.time() + 1.5
                past = await must(cluster.client(replica).read({"q": "bucket", "bucket": "past"}))
                assert past["created"] == 1000.0  # a clock behind is left alone: it only lengthens a lock


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
