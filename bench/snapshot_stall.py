"""What Raft snapshots cost the commits that happen meanwhile.

    python -m bench.snapshot_stall [--objects 1000000] [--seconds 60] [--every 3000] [--inflight 16]
                                   [--no-baseline] [--transfer [--idle]]

Three raftmeta processes (no blob nodes or frontends) whose databases hold ``--objects``
objects, seeded by their own state machine (``bench.scale_seed``, half 0 B and half 1 KiB
inline), then 4 KiB inline ``put_object`` commits at ``--inflight`` for ``--seconds``,
twice: with a compaction every ``--every`` log entries (``--snapshot-entries``), and with
none. A compaction syncs the database and writes a small record; a copy of the database
is made only for a follower that needs one. With ``--transfer`` a follower is stopped a
tenth of the way in, and started again once the leader compacted past it, so the leader
copies its database and sends it (with ``--idle`` the writes stop first, so the copy is
sent by an idle leader). A thread watches each node's record and copy every
20 ms. Reports commit latency p50/p99/max: all, within 0.25 s of a compaction, while a
copy exists (made or sent), and outside both; the follower's catch-up time; and the Raft
terms before and after (a changed term is an election).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import trio

from bench.raft_commit import put
from bench.scale import layout
from bench.scale_seed import seed
from chaos.cluster import SECRET, Cluster
from raftmeta.client import MetaClient


def _template(size: int) -> dict[str, Any]:
    body = os.urandom(size)
    chunks = [[uuid.uuid4().hex, size, "xxh3-128:" + "0" * 32, [], body]] if size else []
    return {"size": size, "etag": "e", "sha256": "s", "content_type": "binary/octet-stream",
            "meta": {"user": {}, "headers": {}, "checksum": {}}, "chunks": chunks}


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"n": len(ordered), "p50_ms": round(1000 * statistics.median(ordered), 2),
            "p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 2), "max_ms": round(1000 * ordered[-1], 2)}


async def _ready(client: MetaClient) -> None:
    """A leader, and the buckets: ``bench`` for the commits, the seed's two (``layout``)."""
    with trio.fail_after(60):
        for bucket in ("bench", "scale-big", "scale-000"):
            while True:
                try:
                    reply = await client.write({"op": "create_bucket", "bucket": bucket, "owner": "o", "ts": 1.0})
                    if reply["ok"] or reply.get("err") == "BucketAlreadyOwnedByYou":
                        break
                except Exception:  # no leader yet
                    pass
                await trio.sleep(0.2)
        while True:  # every replica applied them (the seed writes to each one's database)
            try:
                applied = [(await client.status(addr))["last_applied"] for addr in client.addrs]
                if min(applied) == max(applied):  # the leader applied them before it answered
                    return
            except Exception:  # a replica not up yet
                pass
            await trio.sleep(0.2)


async def _terms(cluster: Cluster) -> list[int | None]:
    client = MetaClient(cluster.rpc, SECRET)
    out: list[int | None] = []
    for addr in cluster.rpc:
        try:
            out.append((await client.status(addr))["term"])
        except Exception:
            out.append(None)
    return out


class _Watch:
    """Polls every node's data dir every 20 ms: when its snapshot record changes (a
    compaction: two fsyncs and a small file) and while a copy for a follower exists
    (``raft.snapshot.send``: made, then sent)."""

    def __init__(self, root: Path) -> None:
        self.dirs = [root / f"raftmeta{i}" for i in (1, 2, 3)]
        self.compactions: list[tuple[float, str]] = []  # (when, which node)
        self.copies: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        def mtime(d: Path) -> int:
            try:
                return (d / "raft.snapshot").stat().st_mtime_ns
            except FileNotFoundError:
                return 0

        seen = [mtime(d) for d in self.dirs]
        since: float | None = None
        while not self.stop.is_set():
            now = time.monotonic()
            for i, d in enumerate(self.dirs):
                m = mtime(d)
                if m != seen[i]:
                    seen[i] = m
                    self.compactions.append((now, f"raftmeta{i + 1}"))
            busy = any((d / "raft.snapshot.send").exists() for d in self.dirs)
            if busy and since is None:
                since = now
            elif not busy and since is not None:
                self.copies.append((since, now))
                since = None
            time.sleep(0.02)
        if since is not None:
            self.copies.append((since, time.monotonic()))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


AROUND = 0.25  # a commit that starts this close to a seen compaction counts as "around" it
WAIT_LIMIT = 300.0  # seconds --transfer waits for the leader's compaction, then for the catch-up


async def _transfer(cluster: Cluster, client: MetaClient, watch: _Watch, start_after: float,
                    out: dict[str, Any], idle: dict[str, bool] | None = None) -> None:
    """Stop a follower, wait for the leader to compact past it, start it again: the leader
    must send it a copy of its database. Records how long until it caught up. With
    ``idle``, the writes stop (``idle["stop"]``) before the follower starts again."""
    await trio.sleep(start_after)
    leader = await trio.to_thread.run_sync(cluster.leader)
    victim = next(f"raftmeta{i}" for i in (1, 2, 3) if f"raftmeta{i}" != leader)
    await trio.to_thread.run_sync(cluster.kill, victim)
    killed = time.monotonic()
    with trio.fail_after(WAIT_LIMIT):
        while not any(t > killed and by == leader for t, by in watch.compactions):
            await trio.sleep(0.1)  # the leader's log no longer holds what the follower lacks
    if idle is not None:
        idle["stop"] = True
        await trio.sleep(1.0)  # the writes in flight end
    await trio.to_thread.run_sync(cluster.start, victim)
    started = time.monotonic()
    leader_addr, victim_addr = (cluster.rpc[int(name[-1]) - 1] for name in (leader, victim))
    target = (await client.status(leader_addr))["commit_index"]
    with trio.fail_after(WAIT_LIMIT):
        while True:
            try:
                if (await client.status(victim_addr))["last_applied"] >= target:
                    break
            except Exception:  # not listening yet
                pass
            await trio.sleep(0.1)
    out.update({"follower": victim, "down_s": round(started - killed, 2),
                "caught_up_s": round(time.monotonic() - started, 2)})


def run(objects: int, seconds: float, every: int, inflight: int, transfer: bool, idle: bool = False) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="cairn-snapstall-"))
    cluster = Cluster(root, blobs=0, frontends=0, raftmeta_flags=["--snapshot-entries", str(every)])
    try:
        cluster.start()
        trio.run(_ready, MetaClient(cluster.rpc, SECRET))
        cluster.stop()
        seeded = seed(cluster, (layout(f, min(f + 100_000, objects), 1) for f in range(0, objects, 100_000)),
                      {0: _template(0), 1024: _template(1024)})
        db_bytes = (root / "raftmeta1" / "meta.sqlite").stat().st_size
        cluster.start()
        client = MetaClient(cluster.rpc, SECRET)
        trio.run(_ready, client)
        terms_before = trio.run(_terms, cluster)
        watch = _Watch(root)
        commits: list[tuple[float, float]] = []
        caught: dict[str, Any] = {}
        control = {"stop": False}

        async def load() -> None:
            end = time.monotonic() + seconds

            async def worker(w: int) -> None:
                n = 0
                while time.monotonic() < end and not control["stop"]:
                    t = time.monotonic()
                    reply = await client.write(put(f"w{w}-{n}"))
                    if not reply.get("ok"):
                        raise RuntimeError(f"commit failed: {reply}")
                    commits.append((t, time.monotonic() - t))
                    n += 1

            async with trio.open_nursery() as nursery:
                for w in range(inflight):
                    nursery.start_soon(worker, w)
                if transfer:
                    nursery.start_soon(_transfer, cluster, client, watch, seconds / 10, caught,
                                       control if idle else None)

        trio.run(load)
        watch.close()
        terms_after = trio.run(_terms, cluster)
        marks = [t for t, _ in watch.compactions]

        def around(t: float) -> bool:
            return any(abs(t - m) <= AROUND for m in marks)

        def copying(t: float) -> bool:
            return any(a <= t <= b for a, b in watch.copies)

        return {"objects": seeded["seeded"], "db_bytes": db_bytes, "snapshot_entries": every,
                "commits": len(commits), "commits_per_s": round(len(commits) / seconds, 1),
                "compactions_seen": len(marks),
                "copies_seconds": [round(b - a, 2) for a, b in watch.copies],
                "all": _stats([lat for _, lat in commits]),
                "around_a_compaction": _stats([lat for t, lat in commits if around(t)]),
                "during_a_copy": _stats([lat for t, lat in commits if copying(t)]),
                "outside": _stats([lat for t, lat in commits if not around(t) and not copying(t)]),
                "transfer": caught,
                "terms_before": terms_before, "terms_after": terms_after}
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--every", type=int, default=3000, help="log entries between snapshots")
    ap.add_argument("--inflight", type=int, default=16)
    ap.add_argument("--no-baseline", action="store_true", help="skip the run without snapshots")
    ap.add_argument("--transfer", action="store_true", help="make the leader send a follower a copy")
    ap.add_argument("--idle", action="store_true", help="with --transfer: writes stop before the follower restarts")
    args = ap.parse_args(argv)
    results = [run(args.objects, args.seconds, every, args.inflight, args.transfer and every < 10**9, args.idle)
               for every in ((args.every,) if args.no_baseline else (args.every, 10**9))]
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
