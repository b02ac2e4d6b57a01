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

from raftmeta.sm.tables import Failed, unpackb
from raftmeta.sm.versions import MANIFEST_TABLES, manifest_at, set_manifest

SCHEMA = ""


def _under(b: str, k: str, seq: int, chunks: bytes, alive: set[str], want: int) -> list[list[Any]]:
    return [[b, k, seq, c[0], c[1], c[2], c[3]] for c in unpackb(chunks)
            if len(c) <= 4 and len(alive.intersection(c[3])) < want]  # inline chunks live in Raft


def q_repair_scan(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """Chunks of versions after the cursor whose replicas on ``alive`` nodes number fewer
    than ``want``: [bucket, key, version, chunk id, size, sha256, nodes]. Current objects
    come first (cursor [bucket, key]), then noncurrent versions (cursor [bucket, key, seq])."""
    alive, want, limit, scan = set(q["alive"]), int(q["want"]), int(q.get("limit", 100)), int(q.get("scan", 2000))
    after = list(q.get("after", ["", ""]))
    items: list[list[Any]] = []
    if len(after) == 2:
        rows = db.execute(
            "SELECT bucket, key, version, chunks FROM objects WHERE (bucket, key) > (?, ?) ORDER BY bucket, key LIMIT ?",
            (after[0], after[1], scan)).fetchall()
        for b, k, version, chunks in rows:
            after = [b, k]
            items += _under(b, k, version, chunks, alive, want)
            if len(items) >= limit:
                return {"items": items, "next": after, "done": False}
        if len(rows) == scan:
            return {"items": items, "next": after, "done": False}
        after = ["", "", 0]  # current objects done: the noncurrent versions next
    b0, k0, s0 = after
    rows = db.execute("SELECT bucket, key, seq, chunks FROM versions WHERE bucket=? AND key=? AND seq<? "
                      "ORDER BY seq DESC LIMIT ?", (b0, k0, s0, scan)).fetchall() if k0 else []
    if len(rows) < scan:
        rows += db.execute("SELECT bucket, key, seq, chunks FROM versions WHERE (bucket, key) > (?, ?) "
                           "ORDER BY bucket, key, seq DESC LIMIT ?", (b0, k0, scan - len(rows))).fetchall()
    for b, k, seq, chunks in rows:
        after = [b, k, seq]
        items += _under(b, k, seq, chunks, alive, want)
        if len(items) >= limit:
            return {"items": items, "next": after, "done": False}
    return {"items": items, "next": after, "done": len(rows) < scan}


def _manifest(db: sqlite3.Connection, cmd: dict[str, Any]) -> list[list[Any]]:
    chunks = manifest_at(db, cmd["bucket"], cmd["key"], cmd["version"])
    if chunks is None:
        raise Failed("Stale")
    return chunks


def cmd_set_replicas(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    chunks = _manifest(db, cmd)
    for c in chunks:
        if c[0] == cmd["chunk"]:
            c[3] = list(cmd["nodes"])
    set_manifest(db, cmd["bucket"], cmd["key"], cmd["version"], chunks)
    return {}


def cmd_drop_replica(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """Read repair: a reader found this replica missing or corrupt. It leaves the manifest
    (never the last replica), so the repair scan sees the chunk under-replicated."""
    chunks = _manifest(db, cmd)
    for c in chunks:
        if c[0] == cmd["chunk"] and cmd["node"] in c[3] and len(c[3]) > 1:
            c[3] = [n for n in c[3] if n != cmd["node"]]
    set_manifest(db, cmd["bucket"], cmd["key"], cmd["version"], chunks)
    return {}


def cmd_replicas_lost(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """A blob node's scrubber quarantined these chunks: drop that node from every manifest
    naming them (never a chunk's last replica). O(objects) for now: a chunk-to-object
    index would make it O(chunks)."""
    lost, node = set(cmd["chunks"]), cmd["node"]
    changed = 0
    rows = [*db.execute("SELECT bucket, key, version, chunks FROM objects").fetchall(),
            *db.execute("SELECT bucket, key, seq, chunks FROM versions").fetchall()]
    for bucket, key, seq, chunks in rows:
        manifest = unpackb(chunks)
        touched = False
        for c in manifest:
            if c[0] in lost and node in c[3] and len(c[3]) > 1:
                c[3] = [n for n in c[3] if n != node]
                touched = True
        if touched:
            set_manifest(db, bucket, key, seq, manifest)
            changed += 1
    return {"objects": changed}


def q_node_refs(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """Every chunk id that a manifest (object or live upload part) places on ``node``."""
    node = q["node"]
    ids: set[str] = set()
    for table in (*MANIFEST_TABLES, "parts"):
        for (chunks,) in db.execute(f"SELECT chunks FROM {table}"):
            ids.update(c[0] for c in unpackb(chunks) if node in c[3])
    return {"ids": sorted(ids)}


def manifests_place_on(db: sqlite3.Connection, node: str) -> bool:
    """Whether any object's or live upload's part's manifest places a chunk on ``node``
    (O(objects); a decommission checks it once)."""
    for table in (*MANIFEST_TABLES, "parts"):
        for (chunks,) in db.execute(f"SELECT chunks FROM {table}"):
            if any(node in c[3] for c in unpackb(chunks)):
                return True
    return False


COMMANDS = {"set_replicas": cmd_set_replicas, "drop_replica": cmd_drop_replica, "replicas_lost": cmd_replicas_lost}
QUERIES = {"repair_scan": q_repair_scan, "node_refs": q_node_refs}
