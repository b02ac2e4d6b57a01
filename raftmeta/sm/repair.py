"""Replication repair in the state machine: finding chunks that have fewer healthy
replicas than wanted, and recording the replicas that repair added.

The leader's repair chore (``raftmeta.chores.repair``) copies chunks blob node to blob node
(the bytes never pass through raftmeta) and then records the new replica set here with
``set_replicas``, which applies only if the object is still the version that was
scanned: an overwrite or delete in between wins, and the copy becomes garbage for GC.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from raftmeta.sm.tables import Failed, packb, unpackb

SCHEMA = ""


def q_repair_scan(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """Chunks of objects after the (bucket, key) cursor whose replicas on ``alive`` nodes
    number fewer than ``want``: [bucket, key, version, chunk id, size, sha256, nodes]."""
    alive, want, limit = set(q["alive"]), int(q["want"]), int(q.get("limit", 100))
    bucket, key = q.get("after", ["", ""])
    items: list[list[Any]] = []
    scanned = 0
    cursor = (bucket, key)
    rows = db.execute(
        "SELECT bucket, key, version, chunks FROM objects WHERE (bucket, key) > (?, ?) ORDER BY bucket, key LIMIT ?",
        (bucket, key, int(q.get("scan", 2000))),
    ).fetchall()
    for b, k, version, chunks in rows:
        scanned += 1
        cursor = (b, k)
        for c in unpackb(chunks):
            if len(c) <= 4 and len(alive.intersection(c[3])) < want:  # inline chunks live in Raft
                items.append([b, k, version, c[0], c[1], c[2], c[3]])
        if len(items) >= limit:
            break
    done = scanned == len(rows) and len(rows) < int(q.get("scan", 2000))
    return {"items": items, "next": list(cursor), "done": done}


def cmd_set_replicas(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    row = db.execute("SELECT version, chunks FROM objects WHERE bucket=? AND key=?", (cmd["bucket"], cmd["key"])).fetchone()
    if row is None or row[0] != cmd["version"]:
        raise Failed("Stale")
    chunks = unpackb(row[1])
    for c in chunks:
        if c[0] == cmd["chunk"]:
            c[3] = list(cmd["nodes"])
    db.execute("UPDATE objects SET chunks=? WHERE bucket=? AND key=?", (packb(chunks), cmd["bucket"], cmd["key"]))
    return {}


def cmd_drop_replica(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """Read repair: a reader found this replica missing or corrupt. It leaves the manifest
    (never the last replica), so the repair scan sees the chunk under-replicated."""
    row = db.execute("SELECT version, chunks FROM objects WHERE bucket=? AND key=?", (cmd["bucket"], cmd["key"])).fetchone()
    if row is None or row[0] != cmd["version"]:
        raise Failed("Stale")
    chunks = unpackb(row[1])
    for c in chunks:
        if c[0] == cmd["chunk"] and cmd["node"] in c[3] and len(c[3]) > 1:
            c[3] = [n for n in c[3] if n != cmd["node"]]
    db.execute("UPDATE objects SET chunks=? WHERE bucket=? AND key=?", (packb(chunks), cmd["bucket"], cmd["key"]))
    return {}


def cmd_replicas_lost(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """A blob node's scrubber quarantined these chunks: drop that node from every manifest
    naming them (never a chunk's last replica). O(objects) for now: a chunk-to-object
    index would make it O(chunks)."""
    lost, node = set(cmd["chunks"]), cmd["node"]
    changed = 0
    for bucket, key, chunks in db.execute("SELECT bucket, key, chunks FROM objects").fetchall():
        manifest = unpackb(chunks)
        touched = False
        for c in manifest:
            if c[0] in lost and node in c[3] and len(c[3]) > 1:
                c[3] = [n for n in c[3] if n != node]
                touched = True
        if touched:
            db.execute("UPDATE objects SET chunks=? WHERE bucket=? AND key=?", (packb(manifest), bucket, key))
            changed += 1
    return {"objects": changed}


def q_node_refs(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """Every chunk id that a manifest (object or live upload part) places on ``node``."""
    node = q["node"]
    ids: set[str] = set()
    for table in ("objects", "parts"):
        for (chunks,) in db.execute(f"SELECT chunks FROM {table}"):
            ids.update(c[0] for c in unpackb(chunks) if node in c[3])
    return {"ids": sorted(ids)}


def manifests_place_on(db: sqlite3.Connection, node: str) -> bool:
    """Whether any object's or live upload's part's manifest places a chunk on ``node``
    (O(objects); a decommission checks it once)."""
    for table in ("objects", "parts"):
        for (chunks,) in db.execute(f"SELECT chunks FROM {table}"):
            if any(node in c[3] for c in unpackb(chunks)):
                return True
    return False


COMMANDS = {"set_replicas": cmd_set_replicas, "drop_replica": cmd_drop_replica, "replicas_lost": cmd_replicas_lost}
QUERIES = {"repair_scan": q_repair_scan, "node_refs": q_node_refs}
