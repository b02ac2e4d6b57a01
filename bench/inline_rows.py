"""Where a 1 KiB inline object's row lives: bytes per object, PUT-apply and point-read
cost of the layouts considered for ``objects`` (the choice: a rowid table, see its SCHEMA).

    python -m bench.inline_rows [objects, default 100000]

Half of the objects 0 bytes, half 1 KiB inline (as ``bench.scale`` fills a cluster);
rows of the shape ``raftmeta.sm.objects`` writes, in raw SQLite (WAL, synchronous=NORMAL),
committed 1000 a transaction; then 2000 PUTs of one transaction each, 20,000 random
point reads and a 50,000-key listing scan. One machine's figures; say how loaded it was.
"""

import os
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from typing import Any

import msgpack


def pk(v: Any) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


META = pk({"owner": "alice", "acl": "private", "writer": "alice"})

LISTING = "CREATE INDEX objects_listing ON objects (bucket, key, size, etag, created);"
COLS = """bucket TEXT NOT NULL, key TEXT NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL, sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL, created REAL NOT NULL, version INTEGER NOT NULL, meta BLOB NOT NULL, chunks BLOB NOT NULL,
    null_id INTEGER NOT NULL DEFAULT 1"""
VARIANTS = {
    "baseline (WITHOUT ROWID, 4 KiB pages)": (4096, f"CREATE TABLE objects ({COLS}, PRIMARY KEY (bucket, key)) WITHOUT ROWID;" + LISTING, False),
    "(a) rowid table + UNIQUE(bucket,key)": (4096, f"CREATE TABLE objects ({COLS}, UNIQUE (bucket, key));" + LISTING, False),
    "(b) WITHOUT ROWID, 8 KiB pages": (8192, f"CREATE TABLE objects ({COLS}, PRIMARY KEY (bucket, key)) WITHOUT ROWID;" + LISTING, False),
    "(b) WITHOUT ROWID, 16 KiB pages": (16384, f"CREATE TABLE objects ({COLS}, PRIMARY KEY (bucket, key)) WITHOUT ROWID;" + LISTING, False),
    "(c) inline bytes in own rowid table": (4096, f"CREATE TABLE objects ({COLS}, PRIMARY KEY (bucket, key)) WITHOUT ROWID;" + LISTING
        + "CREATE TABLE inline_data (id INTEGER PRIMARY KEY, data BLOB NOT NULL);", True),
}


def row(i: int, rng: random.Random) -> tuple[str, int, list[list[Any]], bytes | None]:
    key = f"p/{rng.getrandbits(40):010x}/{i:08d}"
    if i % 2:
        data = rng.randbytes(1024)
        chunks = [[uuid.UUID(int=rng.getrandbits(128)).hex, 1024, "A" * 44, [], data]]
        size = 1024
    else:
        chunks, size, data = [], 0, None
    return key, size, chunks, data


def insert(db: sqlite3.Connection, key: str, size: int, chunks: list[list[Any]], data: bytes | None,
           split: bool) -> None:
    if split and data is not None:
        rid = db.execute("INSERT INTO inline_data (data) VALUES (?)", (data,)).lastrowid
        chunks = [[*chunks[0][:4], rid]]
    db.execute("INSERT INTO objects VALUES ('bucket-1',?,?,?,?,?,?,?,?,?,1)",
               (key, size, "e" * 32, "s" * 64, "binary/octet-stream", 1.7e9, 1, META, pk(chunks)))


def read(db: sqlite3.Connection, key: str, split: bool) -> list[list[Any]]:
    r = db.execute("SELECT key, size, etag, sha256, content_type, created, version, meta, chunks, null_id FROM objects "
                   "WHERE bucket='bucket-1' AND key=?", (key,)).fetchone()
    chunks = msgpack.unpackb(r[8], raw=False)
    if split and chunks:
        chunks[0][4] = db.execute("SELECT data FROM inline_data WHERE id=?", (chunks[0][4],)).fetchone()[0]
    return chunks


def main() -> None:
    n_objects = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        for name, (page, schema, split) in VARIANTS.items():
            path = os.path.join(tmp, f"{len(os.listdir(tmp))}.db")
            db = sqlite3.connect(path, isolation_level=None)
            db.execute(f"PRAGMA page_size={page}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(schema)
            rng = random.Random(7)
            keys = []
            db.execute("BEGIN")
            for i in range(n_objects):
                k, s, c, d = row(i, rng)
                keys.append(k)
                insert(db, k, s, c, d, split)
                if i % 1000 == 999:  # commits of ~1000, as batched applies do
                    db.execute("COMMIT")
                    db.execute("BEGIN")
            db.execute("COMMIT")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            size = os.path.getsize(path)
            # PUT apply: one transaction an object (insert of a new key), 2000 of them
            t = time.perf_counter()
            for i in range(n_objects, n_objects + 2000):
                k, s, c, d = row(i, rng)
                db.execute("BEGIN IMMEDIATE")
                insert(db, k, s, c, d, split)
                db.execute("COMMIT")
            put_us = (time.perf_counter() - t) / 2000 * 1e6
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            sample = rng.sample(keys, min(20000, len(keys)))
            t = time.perf_counter()
            for k in sample:
                read(db, k, split)
            get_us = (time.perf_counter() - t) / len(sample) * 1e6
            t = time.perf_counter()
            n = 0
            for _ in db.execute("SELECT key, size, etag, created FROM objects WHERE bucket='bucket-1' AND key>='p/' "
                                "ORDER BY key LIMIT 50000"):
                n += 1
            list_us = (time.perf_counter() - t) / n * 1e6
            db.close()
            print(f"{name:40s} bytes/object {size / n_objects:7.0f}   put-apply {put_us:6.0f} us   "
                  f"point-read {get_us:5.1f} us   list {list_us:4.2f} us/key", flush=True)


if __name__ == "__main__":
    main()
