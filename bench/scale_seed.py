"""Seed a stopped cluster's metadata with many objects, for ``bench.scale --seed N``.

The S3 fill of ``bench.scale`` runs at a few hundred PUTs per second on a 2-core machine,
so ten million objects would take most of a day. A seed gets a large database the way a
replica would: the replica's own ``MetaState.apply`` applies real ``put_object``
commands, 256 to a batch entry, to raftmeta1's database while the cluster is stopped,
and the other replicas get byte-identical copies. The objects are the cluster's own:
two templates (0 B and 1 KiB, inline) PUT through S3 first, read back, and repeated under
``bench.scale.layout``'s keys with fresh inline chunk ids.

The seed's entries are not in any Raft log, so the database's applied index is set back
to what the cluster had applied; the seeded objects keep the higher version numbers
their entries gave them. Nothing in the bench overwrites a seeded key, and a bucket
never versioned orders a key's writes by nothing else, so this is safe here and only
here: never seed a cluster that holds data.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterable
from typing import Any

import trio

from chaos.cluster import SECRET, Cluster
from raftmeta.client import MetaClient
from raftmeta.state import MetaState

BATCH = 256


def templates(cluster: Cluster, bucket: str) -> dict[int, dict[str, Any]]:
    """Two objects PUT through S3 (0 B and 1 KiB) as the cluster stored them."""
    s3 = cluster.s3()
    for size in (0, 1024):
        s3.put_object(Bucket=bucket, Key=f"seed-template/{size}", Body=os.urandom(size))

    async def read() -> dict[int, dict[str, Any]]:
        client = MetaClient(cluster.rpc, SECRET)
        out = {}
        for size in (0, 1024):
            reply = await client.read({"q": "object", "bucket": bucket, "key": f"seed-template/{size}"})
            out[size] = reply["obj"]
        return out

    return trio.run(read)


def command(bucket: str, key: str, template: dict[str, Any], ts: float) -> dict[str, Any]:
    """A put_object of ``template`` (a stored object) at ``key``, with fresh chunk ids."""
    obj = {k: template[k] for k in ("size", "etag", "sha256", "content_type", "meta")}
    obj["created"] = ts
    obj["chunks"] = [[uuid.uuid4().hex, *chunk[1:]] for chunk in template["chunks"]]
    return {"op": "put_object", "bucket": bucket, "key": key, "obj": obj, "ts": ts, "cond": {}, "integrity": False}


def seed(cluster: Cluster, slices: Iterable[dict[str, list[str]]], objects: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Apply a put_object for every key of every slice (bucket -> keys; even positions of
    a bucket's list 0 B, odd ones 1 KiB) to the stopped cluster's raftmeta1 database,
    then copy it to the others."""
    first = cluster.root / "raftmeta1" / "meta.sqlite"
    state = MetaState(str(first))
    applied = state.applied_index()
    index, count, started = applied, 0, time.perf_counter()
    ts = time.time()
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal index
        index += 1
        result = state.apply(index, {"op": "batch", "cmds": pending})
        failed = [r for r in result.get("results", [result]) if not r.get("ok")]
        if failed:
            raise RuntimeError(f"seed entry {index} failed: {failed[0]}")
        pending.clear()

    for keys in slices:
        for bucket, names in keys.items():
            for i, key in enumerate(names):
                pending.append(command(bucket, key, objects[1024 if i % 2 else 0], ts))
                count += 1
                if len(pending) == BATCH:
                    flush()
    if pending:
        flush()
    state.db.execute("UPDATE meta SET v=? WHERE k='applied'", (applied,))
    state.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    state.close()
    seconds = time.perf_counter() - started
    for n in range(2, cluster.metas + 1):
        target = cluster.root / f"raftmeta{n}" / "meta.sqlite"
        for stale in target.parent.glob("meta.sqlite*"):
            stale.unlink()
        shutil.copyfile(first, target)
    with sqlite3.connect(first) as db:
        (objects_now,) = db.execute("SELECT count(*) FROM objects").fetchone()
    return {"seeded": count, "entries": index - applied, "seconds": round(seconds, 1),
            "per_s": round(count / max(seconds, 1e-9)), "objects_in_db": objects_now}
