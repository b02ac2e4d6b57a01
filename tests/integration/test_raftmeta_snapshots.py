"""In-process tests of raftmeta replicas restarting: catching up from the journal and from
snapshots, and serving non-linear reads while a snapshot is restored."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import trio

from core import wire
from raftmeta.client import MetaClient
from tests.integration.raftcluster import SECRET, must, obj, open_cluster, snapshot_contents, wait_until


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
            # installed from the leader's; its own snapshot of it is written in the background
            await wait_until(lambda: (absent.data_dir / "raft.snapshot").is_file(), 15, "the installed snapshot")
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
