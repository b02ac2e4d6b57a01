"""The chunk index (``raftmeta.sm.chunkindex``) against the full manifest scans it
replaced: repair scan, ``node_refs`` and ``replicas_lost`` for one node, by object count.

    python -m bench.chunk_index [--objects 100000,1000000] [--share 0.005] [--out DIR]

For each count it builds a ``MetaState`` of that many object rows directly (one bucket,
one chunk an object, three replicas on 20 nodes; ``--share`` of the chunks also on a
small node ``small``, which then dies), times the index build (``migrate`` of a database
from before the index), then, before (the full scans of the old code, kept here) and
after (the queries as they are now):
- the repair scan for alive = every node but ``small``, want 3, page by page;
- ``node_refs`` of ``small``;
- ``replicas_lost`` of 100 chunks of ``small`` (an apply: on the Raft thread).
It prints a table and writes DIR/chunk_index.json. Bytes per object with and without
the index are reported too. The figures are one machine's; say how loaded it was.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from raftmeta.sm import chunkindex
from raftmeta.sm.tables import packb, unpackb
from raftmeta.state import MetaState

NODES = [f"n{i:02d}" for i in range(20)]
SMALL = "small"


def build(path: str, objects: int, share: float, seed: int = 1) -> list[str]:
    """A database of ``objects`` rows; returns the chunk ids placed on ``SMALL``."""
    state = MetaState(path)
    db = state.db
    rng = random.Random(seed)
    db.execute("INSERT INTO buckets (name, owner, created, acl, grants) VALUES ('b', 'o', 1.0, 'private', NULL)")
    small: list[str] = []
    db.execute("BEGIN")
    rows = []
    for i in range(objects):
        cid = f"{rng.getrandbits(128):032x}"
        nodes = rng.sample(NODES, 3)
        if rng.random() < share:
            nodes[0] = SMALL
            small.append(cid)
        chunks = [[cid, 4 << 20, f"{rng.getrandbits(256):064x}", nodes]]
        rows.append((f"key/{i:09d}", 4 << 20, "etag", "sha", "binary/octet-stream", 1.0, i + 1, packb({}),
                     packb(chunks), 1))
        if len(rows) == 10_000:
            db.executemany("INSERT INTO objects (bucket, key, size, etag, sha256, content_type, created, version, "
                           "meta, chunks, null_id) VALUES ('b',?,?,?,?,?,?,?,?,?,?)", rows)
            rows = []
    db.executemany("INSERT INTO objects (bucket, key, size, etag, sha256, content_type, created, version, meta, "
                   "chunks, null_id) VALUES ('b',?,?,?,?,?,?,?,?,?,?)", rows)
    db.execute("DELETE FROM chunk_nodes")
    db.execute("DELETE FROM chunk_width")
    db.execute("DELETE FROM meta WHERE k='chunk_index'")  # as a version before the index wrote it
    db.execute("COMMIT")
    state.close()
    return small


def old_repair_scan(db: sqlite3.Connection, alive: set[str], want: int) -> int:
    """The repair scan before the index: every manifest, 2000 rows a page."""
    found, after = 0, ("", "")
    while True:
        rows = db.execute("SELECT bucket, key, version, chunks FROM objects WHERE (bucket, key) > (?, ?) "
                          "ORDER BY bucket, key LIMIT 2000", after).fetchall()
        for b, k, _v, chunks in rows:
            after = (b, k)
            found += sum(1 for c in unpackb(chunks) if len(c) <= 4 and len(alive.intersection(c[3])) < want)
        if len(rows) < 2000:
            break
    for (chunks,) in db.execute("SELECT chunks FROM versions"):
        found += sum(1 for c in unpackb(chunks) if len(c) <= 4 and len(alive.intersection(c[3])) < want)
    return found


def old_node_refs(db: sqlite3.Connection, node: str) -> int:
    ids: set[str] = set()
    for table in ("objects", "versions", "parts"):
        for (chunks,) in db.execute(f"SELECT chunks FROM {table}"):
            ids.update(c[0] for c in unpackb(chunks) if node in c[3])
    return len(ids)


def old_replicas_lost(db: sqlite3.Connection, node: str, lost: set[str]) -> int:
    """The old command's work, without its writes: every manifest unpacked and searched."""
    hits = 0
    for table in ("objects", "versions"):
        for (chunks,) in db.execute(f"SELECT chunks FROM {table}"):
            hits += any(c[0] in lost and node in c[3] for c in unpackb(chunks))
    return hits


def new_repair_scan(state: MetaState, alive: list[str], want: int) -> tuple[int, int]:
    found, pages, cursor = 0, 0, ["", ""]
    while True:
        page = state.query({"q": "repair_scan", "alive": alive, "want": want, "after": cursor, "limit": 1000})
        found, pages = found + len(page["items"]), pages + 1
        if page["done"]:
            return found, pages
        cursor = page["next"]


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def size_of(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def measure(objects: int, share: float, tmp: str) -> dict[str, Any]:
    path = os.path.join(tmp, f"meta-{objects}.db")
    small = build(path, objects, share)
    db = sqlite3.connect(path)
    db.execute("VACUUM")
    db.close()
    bytes_before = size_of(path)
    build_s, state = timed(MetaState, path)  # migrate builds the index
    assert chunkindex.holds_any(state.db, SMALL)
    state.db.execute("VACUUM")
    state.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    bytes_after = size_of(path)
    alive = NODES
    old_scan_s, old_found = timed(old_repair_scan, state.reader, set(alive), 3)
    new_scan_s, (new_found, pages) = timed(new_repair_scan, state, alive, 3)
    assert old_found == new_found == len(small), (old_found, new_found, len(small))
    old_refs_s, old_refs = timed(old_node_refs, state.reader, SMALL)
    new_refs_s, new_refs = timed(state.query, {"q": "node_refs", "node": SMALL})
    assert old_refs == len(new_refs["ids"]) == len(small)
    lost = small[:100]
    old_lost_s, _ = timed(old_replicas_lost, state.reader, SMALL, set(lost))
    new_lost_s, result = timed(state.apply, state.last_applied + 1,
                               {"op": "replicas_lost", "node": SMALL, "chunks": lost, "ts": 2.0})
    assert result["objects"] == len(lost), result
    state.close()
    return {
        "objects": objects, "small_node_chunks": len(small), "index_build_s": round(build_s, 2),
        "bytes_per_object_without_index": round(bytes_before / objects, 1),
        "bytes_per_object_with_index": round(bytes_after / objects, 1),
        "repair_scan_s": {"before": round(old_scan_s, 3), "after": round(new_scan_s, 4), "pages_after": pages},
        "node_refs_s": {"before": round(old_refs_s, 3), "after": round(new_refs_s, 4)},
        "replicas_lost_100_s": {"before": round(old_lost_s, 3), "after": round(new_lost_s, 4)},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.chunk_index", description=__doc__.splitlines()[0])
    ap.add_argument("--objects", default="100000,1000000")
    ap.add_argument("--share", type=float, default=0.005, help="share of the chunks on the node that dies")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.objects.split(",")):
            r = measure(n, args.share, tmp)
            results.append(r)
            print(json.dumps(r), flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "chunk_index.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
