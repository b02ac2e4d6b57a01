"""In-process tests of raftmeta replicas restarting: catching up from the journal and from
snapshots, and serving non-linear reads while a snapshot is installed."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import pytest
import trio

from core import wire
from raftmeta.client import MetaClient
from raftmeta.snapshots import DatabaseBehind
from tests.integration.raftcluster import SECRET, must, obj, open_cluster, wait_until


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
    """With compaction after 50 entries, ~200 writes leave snapshot records and a compacted
    log. A replica whose SQLite file was deleted refuses to start (the compacted log cannot
    rebuild it); a replica that was down while the others compacted is brought up to date
    by the leader sending it a copy of its database."""
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
                lambda: all((r.data_dir / "raft.snapshot").is_file() for r in live), 15, "snapshot records",
            )
            sts = await cluster.statuses(live)
            for st in sts:  # the logs were compacted past what the absent replica has
                assert st["log_size"] < 150 and st["commit_index"] - st["log_size"] > absent_applied, st
            for r in live:  # a record, not a copy of the database
                assert (r.data_dir / "raft.snapshot").stat().st_size < 4096
                assert not (r.data_dir / "raft.snapshot.send").exists()
            expected = [f"k{i:03d}" for i in range(200)]

            # 1. everything down; `rebuilt` loses its SQLite database and refuses to start (it
            # must be replaced as a member: restarted empty, it would vote without its log)
            for r in live:
                await r.stop()
            for suffix in ("", "-wal", "-shm"):
                (rebuilt.data_dir / f"meta.sqlite{suffix}").unlink(missing_ok=True)
            with pytest.raises(DatabaseBehind, match="Replace this member"):
                await rebuilt.start(cluster.nursery)
            assert rebuilt.state is not None and rebuilt.node is None
            rebuilt.state.close()
            rebuilt.state = None

            # 2. the leader back, then the absent replica: only a copy can catch it up
            await leader.start(cluster.nursery)
            await absent.start(cluster.nursery)
            await cluster.wait_leader()
            listing = await must(cluster.client(absent).read({"q": "list", "bucket": "s", "max_keys": 1000},
                                                             deadline=30))
            assert [c["key"] for c in listing["contents"]] == expected
            await wait_until(lambda: (absent.data_dir / "raft.snapshot").is_file(), 15, "the installed record")
            assert not (leader.data_dir / "raft.snapshot.send").exists()  # the copy went once sent
            for r in (leader, absent):
                stats = await must(cluster.client(r).read({"q": "stats"}))
                assert stats["objects"] == 200, (r.name, stats)
            await must(cluster.client(leader, absent).write({"op": "put_object", "bucket": "s", "key": "last",
                                                             "obj": obj(1), "ts": time.time()}))
            for r in (leader, absent):
                got = await must(cluster.client(r).read({"q": "object", "bucket": "s", "key": "last"}))
                assert got["obj"]["size"] == 1
            assert not cluster.crashes()


async def test_a_transfer_held_back_every_part_is_sent_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower's send window smaller than one part holds it back after every part, and
    rounds of parts are short: the transfer goes on from where it was at each tick (it used
    to start again from its first part whenever a held-back node was sent to), and the
    leader commits meanwhile."""
    from raftmeta import node as raft_node
    from raftmeta import snapshots

    monkeypatch.setattr(raft_node, "RAFT_SEND_WINDOW", 16 << 10)
    monkeypatch.setattr(snapshots, "SEND_SLICE", 0.0005)
    monkeypatch.setattr(snapshots, "SEND_EVERY", 0.002)
    with trio.fail_after(90):
        async with open_cluster(tmp_path, compaction_entries=50) as cluster:
            leader = await cluster.wait_leader()
            client = MetaClient(cluster.addrs, SECRET)
            await must(client.write({"op": "create_bucket", "bucket": "t", "owner": "alice", "ts": time.time()}))
            absent, other = [r for r in cluster.replicas if r is not leader]
            await absent.stop()
            live = cluster.client(leader, other)
            pad = "x" * 4000  # ~1.5 MB of rows: about 25 parts of 64 KiB
            for i in range(300):
                await must(live.write({"op": "put_object", "bucket": "t", "key": f"k{i:03d}", "obj": obj(i, pad=pad),
                                       "ts": time.time()}))
            await wait_until(lambda: (leader.data_dir / "raft.snapshot").is_file(), 15, "the leader's record")
            assert leader.node is not None
            stats = leader.node.snapshot_stats
            await absent.start(cluster.nursery)
            written = 0

            async def writer(w: int) -> None:  # new entries arrive between the leader's ticks
                nonlocal written
                while not (absent.node is not None and absent.node.snapshot_stats["installed"]):
                    await must(live.write({"op": "put_object", "bucket": "t", "key": f"during{w}-{written:05d}",
                                           "obj": obj(1), "ts": time.time()}))
                    written += 1
                    assert written < 20_000, "no snapshot installed"

            async with trio.open_nursery() as writers:
                for w in range(8):
                    writers.start_soon(writer, w)
            assert stats["sent"] == 1 and stats["dropped"] == 0 and stats["copies"] == 1, (stats, written)
            listing = await must(cluster.client(absent).read({"q": "list", "bucket": "t", "max_keys": 1000}, deadline=30))
            assert len(listing["contents"]) == min(1000, 300 + written)
            assert not cluster.crashes()


async def _reads_across_snapshot_restores(root: Path, attempts: int = 3) -> list[str]:
    """Stop a follower while the others write and compact past it, start it again, so that
    it installs a copy of the leader's database while three readers send it non-linear
    reads; repeat up to ``attempts`` times. Returns what went wrong (nothing, if the replica
    kept serving). Prints the result as JSON before the cluster is torn down (a failure
    can leave this process damaged)."""
    problems: list[str] = []
    with trio.fail_after(120):
        async with open_cluster(root, compaction_entries=50) as cluster:
            leader = await cluster.wait_leader()
            client = MetaClient(cluster.addrs, SECRET)
            await must(client.write({"op": "create_bucket", "bucket": "s", "owner": "alice", "ts": time.time()}))
            victim = next(r for r in cluster.replicas if r is not leader)
            written = 0
            for attempt in range(1, attempts + 1):
                await victim.stop()
                live = cluster.client(*[r for r in cluster.replicas if r is not victim])
                for _ in range(150):  # past the others' compactions (every 50 entries, staggered)
                    await must(live.write({"op": "put_object", "bucket": "s", "key": f"k{written:04d}",
                                           "obj": obj(written, pad="x" * 2000), "ts": time.time()}))
                    written += 1
                target = (await cluster.statuses([leader]))[0]["last_applied"]
                await victim.start(cluster.nursery)  # the leader sends it a copy within ~0.1 s
                answered: list[bool] = []
                installed = trio.Event()

                async def watch(installed: trio.Event = installed, target: int = target) -> None:
                    deadline = time.monotonic() + 20
                    while time.monotonic() < deadline and not cluster.crashes():
                        with contextlib.suppress(wire.WireError):
                            if (await MetaClient([victim.rpc_addr], SECRET).status(victim.rpc_addr)
                                    )["state_applied"] >= target:
                                installed.set()
                                return
                        await trio.sleep(0.02)
                    installed.set()

                async def reader_loop(answered: list[bool] = answered, installed: trio.Event = installed) -> None:
                    reader = MetaClient([victim.rpc_addr], SECRET)
                    after = 0
                    deadline = time.monotonic() + 25
                    while time.monotonic() < deadline and not cluster.crashes():
                        try:
                            reply = await reader._call_once(victim.rpc_addr, {
                                "op": "read", "q": {"q": "list", "bucket": "s", "max_keys": 1000}, "linear": False})
                        except wire.WireError as exc:
                            problems.append(f"read {len(answered) + 1} failed: {exc!r}")
                            return
                        answered.append(bool(reply.get("ok")))
                        after = after + 1 if installed.is_set() and reply.get("ok") else 0
                        if after >= 10:
                            return  # installed, and served well after that
                        await trio.sleep(0.005)

                async with trio.open_nursery() as readers:
                    readers.start_soon(watch)
                    for _ in range(3):
                        readers.start_soon(reader_loop)
                problems.extend(cluster.crashes())
                try:
                    with trio.fail_after(5):
                        status = await MetaClient([victim.rpc_addr], SECRET).status(victim.rpc_addr)
                    if status["state_applied"] < target:
                        problems.append(f"snapshot not installed: {status}")
                except (wire.WireError, trio.TooSlowError) as exc:
                    problems.append(f"the replica no longer answers: {exc!r}")
                if problems:
                    problems.insert(0, f"attempt {attempt}, after {len(answered)} reads ({answered.count(True)} ok)")
                    break
            print(json.dumps({"problems": problems}), flush=True)
    return problems


async def test_non_linear_reads_during_snapshot_restore(tmp_path: Path) -> None:
    """Frontends read ``nodes`` and ``bucket`` with linear=False; a replica installing a
    snapshot the leader sent it must keep serving them. The scenario runs in a child process: when it goes wrong SQLite is used across
    threads on a closed connection (undefined behaviour), which must not damage this one."""
    script = (
        "import sys, trio; from pathlib import Path; "
        "from tests.integration.test_raftmeta_snapshots import _reads_across_snapshot_restores as run; "
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
