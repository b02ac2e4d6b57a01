"""Real raftmeta replicas (PySyncObj, SQLite): a follower stopped while writes go on and the
others compact their logs is brought back by a snapshot, installed by renaming the received
file into place, without an election, and ends with the leader's content."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import trio

from raftmeta.client import MetaClient
from tests.integration.raftcluster import SECRET, must, obj, open_cluster, wait_until


def _rows(path: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(path)
    try:
        return list(db.execute("SELECT bucket, key FROM objects ORDER BY bucket, key"))
    finally:
        db.close()


async def test_stopped_follower_installs_the_snapshot(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with open_cluster(tmp_path, compaction_entries=40) as cluster:
            leader = await cluster.wait_leader()
            client = MetaClient(cluster.addrs, SECRET)
            await must(client.write({"op": "create_bucket", "bucket": "s", "owner": "o", "ts": time.time()}))
            absent = next(r for r in cluster.replicas if r is not leader)
            await absent.stop()
            live = [r for r in cluster.replicas if r is not absent]
            live_client = cluster.client(*live)
            for i in range(300):
                await must(live_client.write({"op": "put_object", "bucket": "s", "key": f"k{i:04d}",
                                              "obj": obj(i, pad="p" * 500), "ts": time.time()}))
            await wait_until(lambda: all((r.data_dir / "raft.snapshot").is_file() for r in live), 20, "snapshots")
            term = (await cluster.statuses([leader]))[0]["term"]
            sts = await cluster.statuses(live)
            assert all(st["commit_index"] - st["log_size"] > 5 for st in sts), sts  # compacted

            inode = (absent.data_dir / "meta.sqlite").stat().st_ino
            await absent.start(cluster.nursery)
            target = (await cluster.statuses([leader]))[0]["last_applied"]
            await wait_until(lambda: absent.state is not None and absent.state.last_applied >= target, 30,
                             "the snapshot installed")
            await wait_until(lambda: (absent.data_dir / "raft.snapshot").is_file(), 20, "its own snapshot")
            assert not (absent.data_dir / "raft.snapshot.installed").exists()
            assert (absent.data_dir / "meta.sqlite").stat().st_ino != inode  # the received file, renamed
            assert absent.state is not None and leader.state is not None
            assert (await cluster.wait_leader()) is leader
            assert (await cluster.statuses([leader]))[0]["term"] == term  # no election
            await must(client.write({"op": "put_object", "bucket": "s", "key": "last", "obj": obj(1),
                                     "ts": time.time()}))
            final = (await cluster.statuses([leader]))[0]["last_applied"]
            await wait_until(lambda: absent.state is not None and absent.state.last_applied >= final, 20, "last")
            expected = _rows(leader.data_dir / "meta.sqlite")
            assert len(expected) == 301
            assert _rows(absent.data_dir / "meta.sqlite") == expected
            listing = await must(cluster.client(absent).read({"q": "list", "bucket": "s", "max_keys": 1000},
                                                             linear=False))
            assert len(listing["contents"]) == 301
            assert not cluster.crashes()
