"""The GC queue and shared chunks: a chunk whose last reference a transaction drops is
queued here by that same transaction, and nowhere else; only chunks shared by copies
carry a reference count (``shared``), so the common path pays nothing for sharing.
The leader's GC chore (``raftmeta.chores.gc``) deletes queued chunks after their grace."""

from __future__ import annotations

import sqlite3
from typing import Any

from raftmeta.sm.tables import packb, unpackb

SCHEMA = """
CREATE TABLE IF NOT EXISTS gc (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, chunk TEXT NOT NULL, nodes BLOB NOT NULL, queued REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS shared (chunk TEXT PRIMARY KEY, refs INTEGER NOT NULL) WITHOUT ROWID;
"""


def queue_gc(db: sqlite3.Connection, chunks: list[list[Any]], ts: float, keep: set[str] = frozenset()) -> None:
    """Drop one reference to each chunk (except those in ``keep``). A chunk that nothing
    references any more goes to the GC queue; a shared one (CopyObject) loses a count."""
    garbage = []
    for c in chunks:
        if c[0] in keep or len(c) > 4:  # inline bytes go with their row
            continue
        row = db.execute("SELECT refs FROM shared WHERE chunk=?", (c[0],)).fetchone()
        if row is None:
            garbage.append((c[0], packb(c[3]), ts))
        elif row[0] > 2:
            db.execute("UPDATE shared SET refs=refs-1 WHERE chunk=?", (c[0],))
        else:
            db.execute("DELETE FROM shared WHERE chunk=?", (c[0],))  # one reference left
    db.executemany("INSERT INTO gc (chunk, nodes, queued) VALUES (?,?,?)", garbage)


def add_refs(db: sqlite3.Connection, chunks: list[list[Any]]) -> None:
    """One more reference to each chunk. Only shared chunks have a row (refs >= 2)."""
    db.executemany(
        "INSERT INTO shared VALUES (?, 2) ON CONFLICT (chunk) DO UPDATE SET refs=refs+1",
        [(c[0],) for c in chunks if len(c) <= 4],
    )


def cmd_discard_chunks(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """Chunks written by an upload that failed before its commit: reclaim them."""
    queue_gc(db, cmd["chunks"], cmd["ts"])
    return {}


def cmd_gc_done(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    db.executemany("DELETE FROM gc WHERE seq=?", [(s,) for s in cmd["seqs"]])
    return {}


def q_gc_pending(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    rows = [] if q.get("limit", 1000) == 0 else db.execute(
        "SELECT seq, chunk, nodes FROM gc WHERE queued <= ? ORDER BY seq LIMIT ?",
        (q["before"], q.get("limit", 1000)),
    ).fetchall()
    total = db.execute("SELECT count(*) FROM gc").fetchone()[0]
    return {"items": [[s, c, unpackb(n)] for s, c, n in rows], "total": total}


def q_chunk_refs(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """Every chunk id that an object or a live upload's part references, and those queued
    for GC (tests and audits; O(objects))."""
    ids: list[str] = []
    for table in ("objects", "versions", "parts"):
        for (chunks,) in db.execute(f"SELECT chunks FROM {table}"):
            ids.extend(c[0] for c in unpackb(chunks) if len(c) <= 4)
    pending = [r[0] for r in db.execute("SELECT chunk FROM gc")]
    return {"referenced": ids, "gc": pending}


COMMANDS = {"discard_chunks": cmd_discard_chunks, "gc_done": cmd_gc_done}
QUERIES = {"gc_pending": q_gc_pending, "chunk_refs": q_chunk_refs}
