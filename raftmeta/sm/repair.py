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

from raftmeta.sm import chunkindex
from raftmeta.sm.tables import Failed, packb, unpackb
from raftmeta.sm.versions import manifest_at, set_manifest

SCHEMA = ""

SCAN = 2000  # index rows a repair_scan call reads at most


def _entry(chunks: list[list[Any]], cid: str) -> list[Any] | None:
    for c in chunks:
        if c[0] == cid and len(c) <= 4:  # inline chunks live in Raft
            return c
    return None


class _Manifests:
    """Version manifests by (bucket, key, seq), the last one read kept: index rows of one
    version come together, so a many-chunk manifest is unpacked once per run of rows."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.ref: tuple[str, str, int] | None = None
        self.chunks: list[list[Any]] | None = None

    def get(self, bucket: str, key: str, seq: int) -> list[list[Any]] | None:
        if self.ref != (bucket, key, seq):
            self.ref, self.chunks = (bucket, key, seq), manifest_at(self.db, bucket, key, seq)
        return self.chunks


def q_repair_scan(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """Chunks of object versions whose replicas on ``alive`` nodes number fewer than
    ``want``: [bucket, key, version, chunk id, size, sha256, nodes], each once, from the
    chunk index (``chunkindex``), never a scan of the manifests. Two phases, ``scan``
    index rows a call at most:
    - ``w``: chunks whose manifest entry names fewer than ``want`` nodes (``chunk_width``);
    - ``n``: each node that holds chunks and is not in ``alive``, in node order: its
      chunks (``chunk_nodes``), but those found before (too narrow, or on an earlier
      such node) and those that still have ``want`` counted replicas.
    ``after``: the ``next`` of the previous call (anything else starts over: the
    cursor [bucket, key] of an older version of this query starts at the beginning)."""
    alive, want = set(q["alive"]), int(q["want"])
    limit, scan = int(q.get("limit", 100)), max(1, int(q.get("scan", SCAN)))
    after = list(q.get("after") or [])
    manifests = _Manifests(db)
    items: list[list[Any]] = []
    read = 0
    if not after or after[0] not in ("w", "n"):
        after = ["w", -1, "", "", 0, ""]
    if after[0] == "w":
        rows = db.execute(
            "SELECT width, bucket, key, seq, chunk FROM chunk_width WHERE width<? AND "
            "(width, bucket, key, seq, chunk) > (?,?,?,?,?) ORDER BY width, bucket, key, seq, chunk LIMIT ?",
            (want, *after[1:6], scan)).fetchall()
        for width, b, k, seq, cid in rows:
            read += 1
            after = ["w", width, b, k, seq, cid]
            c = _entry(manifests.get(b, k, seq) or [], cid)
            if c is not None and len(alive.intersection(c[3])) < want:
                items.append([b, k, seq, cid, c[1], c[2], c[3]])
            if len(items) >= limit:
                return {"items": items, "next": after, "done": False}
        if len(rows) == scan:
            return {"items": items, "next": after, "done": False}
        after = ["n", "", "", "", "", 0]
    _, node, cid0, b0, k0, s0 = after
    if not cid0:  # this node done (or none yet): the next one that is not counted
        node = next_uncounted(db, node, alive)
        cid0, b0, k0, s0 = "", "", "", -1
    while node is not None:
        rows = db.execute(
            "SELECT chunk, a, b, n FROM chunk_nodes WHERE node=? AND kind=? AND (chunk, a, b, n) > (?,?,?,?) "
            "ORDER BY chunk, a, b, n LIMIT ?",
            (node, chunkindex.KIND_VERSION, cid0, b0, k0, s0, scan - read)).fetchall()
        for cid, b, k, seq in rows:
            read += 1
            after = ["n", node, cid, b, k, seq]
            c = _entry(manifests.get(b, k, seq) or [], cid)
            if c is not None and _first_found_at(c[3], node, alive, want):
                items.append([b, k, seq, cid, c[1], c[2], c[3]])
            if len(items) >= limit:
                return {"items": items, "next": after, "done": False}
        if read >= scan:
            return {"items": items, "next": after, "done": False}
        node = next_uncounted(db, node, alive)
        cid0, b0, k0, s0 = "", "", "", -1
        after = ["n", node or "", "", "", "", 0]
    return {"items": items, "next": after, "done": True}


def next_uncounted(db: sqlite3.Connection, after: str, alive: set[str]) -> str | None:
    """The next node id after ``after`` that holds chunks and is not in ``alive`` (one
    index seek per node skipped)."""
    node = chunkindex.next_node(db, after)
    while node is not None and node in alive:
        node = chunkindex.next_node(db, node)
    return node


def _first_found_at(nodes: list[str], node: str, alive: set[str], want: int) -> bool:
    """Whether the phase of ``node`` reports this under-replicated chunk: it is, it was
    not too narrow (phase ``w``), and ``node`` is the first uncounted node it names."""
    distinct = set(nodes)
    if len(distinct) < want or len(alive & distinct) >= want:
        return False
    return min(distinct - alive) == node


def _manifest(db: sqlite3.Connection, cmd: dict[str, Any]) -> list[list[Any]]:
    chunks = manifest_at(db, cmd["bucket"], cmd["key"], cmd["version"])
    if chunks is None:
        raise Failed("Stale")
    return chunks


def cmd_set_replicas(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    chunks = _manifest(db, cmd)
    for c in chunks:
        if c[0] == cmd["chunk"] and len(c) <= 4:  # an inline chunk has no replicas to set
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


def _without(chunks: list[list[Any]], cid: str, node: str) -> bool:
    """Drop ``node`` from chunk ``cid``'s replicas (never the last); whether it changed."""
    touched = False
    for c in chunks:
        if c[0] == cid and len(c) <= 4 and node in c[3] and len(c[3]) > 1:
            c[3] = [n for n in c[3] if n != node]
            touched = True
    return touched


def cmd_replicas_lost(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """A blob node's scrubber (or the orphan sweep) found these chunks gone: drop that node
    from every manifest naming them (object versions and live upload parts; never a
    chunk's last replica). O(references of these chunks on the node): the chunk index."""
    node = cmd["node"]
    refs = sorted({ref for cid in dict.fromkeys(cmd["chunks"]) for ref in chunkindex.refs_of(db, node, cid)})
    lost = set(cmd["chunks"])
    changed = parts = 0
    for kind, a, b, n in refs:
        if kind == chunkindex.KIND_VERSION:
            old = manifest_at(db, a, b, n)
            if old is None:
                continue
            manifest = unpackb(packb(old))
            if any([_without(manifest, cid, node) for cid in sorted(lost)]):
                set_manifest(db, a, b, n, manifest, old)
                changed += 1
        else:
            row = db.execute("SELECT chunks FROM parts WHERE upload_id=? AND number=?", (a, n)).fetchone()
            if row is None:
                continue
            old, manifest = unpackb(row[0]), unpackb(row[0])
            if any([_without(manifest, cid, node) for cid in sorted(lost)]):
                chunkindex.replace(db, (kind, a, b, n), old, manifest)
                db.execute("UPDATE parts SET chunks=? WHERE upload_id=? AND number=?", (packb(manifest), a, n))
                parts += 1
    return {"objects": changed, "parts": parts}


def q_node_refs(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """Chunk ids that a manifest (object version or live upload part) places on
    ``node``, ascending, after ``after``: ``limit`` of them (without one: all, still
    O(chunks on the node)); ``more``: whether there are more after the last."""
    node, after, limit = q["node"], str(q.get("after", "")), q.get("limit")
    if limit is None:
        return {"ids": chunkindex.node_chunks(db, node, after, -1), "more": False}
    ids = chunkindex.node_chunks(db, node, after, int(limit) + 1)
    return {"ids": ids[:int(limit)], "more": len(ids) > int(limit)}


def manifests_place_on(db: sqlite3.Connection, node: str) -> bool:
    """Whether any object version's or live upload part's manifest places a chunk on
    ``node`` (one index seek)."""
    return chunkindex.holds_any(db, node)


COMMANDS = {"set_replicas": cmd_set_replicas, "drop_replica": cmd_drop_replica, "replicas_lost": cmd_replicas_lost}
QUERIES = {"repair_scan": q_repair_scan, "node_refs": q_node_refs}
