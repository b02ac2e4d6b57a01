"""What a Raft snapshot costs the commits that happen meanwhile.

    python -m bench.snapshot_stall [--objects 1000000] [--seconds 60] [--every 3000] [--inflight 16] [--no-baseline]

Three raftmeta processes (no blob nodes or frontends) whose databases hold ``--objects``
objects, seeded by their own state machine (``bench.scale_seed``, half 0 B and half 1 KiB
inline), then 4 KiB inline ``put_object`` commits at ``--inflight`` for ``--seconds``,
twice: with a snapshot every ``--every`` log entries (``--snapshot-entries``), and with
none. A background thread watches each node's ``raft.snapshot.tmp`` (present while a
snapshot is being written) every 20 ms; a commit that starts while any node writes one
counts as "during". Reports commit latency p50/p99/max during and outside snapshots, the
snapshots seen, and the Raft terms before and after (a changed term is an election).
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


async def _terms(cluster: Cluster) -> list[int | None]:
    client = MetaClient(cluster.rpc, SECRET)
    out: list[int | None] = []
    for addr in cluster.rpc:
        try:
            out.append((await client.status(addr))["term"])
        except Exception:
            out.append(None)
    return out


def _watch(root: Path, stop: threading.Event, intervals: list[tuple[float, float]]) -> None:
    tmps = [root / f"raftmeta{i}" / "raft.snapshot.tmp" for i in (1, 2, 3)]
    since: float | None = None
    while not stop.is_set():
        busy = any(p.exists() for p in tmps)
        now = time.monotonic()
        if busy and since is None:
            since = now
        elif not busy and since is not None:
            intervals.append((since, now))
            since = None
        time.sleep(0.02)
    if since is not None:
        intervals.append((since, time.monotonic()))


def run(objects: int, seconds: float, every: int, inflight: int) -> dict[str, Any]:
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
        intervals: list[tuple[float, float]] = []
        stop = threading.Event()
        watcher = threading.Thread(target=_watch, args=(root, stop, intervals), daemon=True)
        watcher.start()
        commits: list[tuple[float, float]] = []

        async def load() -> None:
            end = time.monotonic() + seconds

            async def worker(w: int) -> None:
                n = 0
                while time.monotonic() < end:
                    t = time.monotonic()
                    reply = await client.write(put(f"w{w}-{n}"))
                    if not reply.get("ok"):
                        raise RuntimeError(f"commit failed: {reply}")
                    commits.append((t, time.monotonic() - t))
                    n += 1

            async with trio.open_nursery() as nursery:
                for w in range(inflight):
                    nursery.start_soon(worker, w)

        trio.run(load)
        stop.set()
        watcher.join()
        terms_after = trio.run(_terms, cluster)
        during = [lat for t, lat in commits if any(a <= t <= b for a, b in intervals)]
        outside = [lat for t, lat in commits if not any(a <= t <= b for a, b in intervals)]
        return {"objects": seeded["seeded"], "db_bytes": db_bytes, "snapshot_entries": every,
                "commits": len(commits), "commits_per_s": round(len(commits) / seconds, 1),
                "snapshots_seen": len(intervals),
                "snapshot_seconds": [round(b - a, 2) for a, b in intervals][:20],
                "during": _stats(during), "outside": _stats(outside),
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
    args = ap.parse_args(argv)
    results = [run(args.objects, args.seconds, every, args.inflight)
               for every in ((args.every,) if args.no_baseline else (args.every, 10**9))]
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
