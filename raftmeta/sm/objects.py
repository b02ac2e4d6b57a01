"""Objects: one row per (bucket, key) holding the whole manifest, replaced atomically;
conditional writes decided inside the commit; CopyObject sharing chunks; tags; the
listing (a covering index scan)."""

from __future__ import annotations

import sqlite3
from typing import Any

from raftmeta.sm.gcqueue import add_refs, queue_gc
from raftmeta.sm.tables import Failed, bucket_exists, packb, successor, unpackb

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL, key TEXT NOT NULL,
    size INTEGER NOT NULL, etag TEXT NOT NULL, sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL, created REAL NOT NULL, version INTEGER NOT NULL,
    meta BLOB NOT NULL, chunks BLOB NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
-- Listings scan this covering index, not the table, whose rows carry whole manifests
-- (inline objects' bytes among them): 1000 keys of 4 KiB objects cost 19 ms -> ms.
CREATE INDEX IF NOT EXISTS objects_listing ON objects (bucket, key, size, etag, created);
"""

OBJECT_COLS = "key, size, etag, sha256, content_type, created, version, meta, chunks"


def object_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "key": row[0], "size": row[1], "etag": row[2], "sha256": row[3], "content_type": row[4],
        "created": row[5], "version": row[6], "meta": unpackb(row[7]), "chunks": unpackb(row[8]),
    }


def replace_object(
    db: sqlite3.Connection, bucket: str, key: str, obj: dict[str, Any], ts: float, index: int,
    cond: dict[str, Any] | None = None,
) -> int:
    """Make ``obj`` the object at (bucket, key) atomically; the replaced version's chunks
    (except any the new one reuses) go to the GC queue. Returns the new version.
    ``cond`` is a conditional write, decided here so racing writers cannot both win:
    ``if_none_match`` (only if absent) and ``if_match`` (only if the ETag is one of these)."""
    if not bucket_exists(db, bucket):
        raise Failed("NoSuchBucket")
    old = db.execute("SELECT chunks, etag FROM objects WHERE bucket=? AND key=?", (bucket, key)).fetchone()
    if cond:
        if cond.get("if_none_match") and old is not None:
            raise Failed("PreconditionFailed")
        if "if_match" in cond:
            if old is None:
                raise Failed("NoSuchKey")
            if "*" not in cond["if_match"] and old[1] not in cond["if_match"]:
                raise Failed("PreconditionFailed")
    if old is not None:
        queue_gc(db, unpackb(old[0]), ts, {c[0] for c in obj["chunks"]})
    db.execute(
        "INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            bucket, key, obj["size"], obj["etag"], obj["sha256"], obj["content_type"],
            obj["created"], index, packb(obj.get("meta", {})), packb(obj["chunks"]),
        ),
    )
    return index


def cmd_put_object(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """Commit a whole object atomically: its manifest replaces the previous version."""
    return {"version": replace_object(db, cmd["bucket"], cmd["key"], cmd["obj"], cmd["ts"], cmd["index"],
                                      cmd.get("cond"))}


def cmd_copy_object(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """CopyObject without copying a byte: the copy shares the source's chunks (counted
    in ``shared``), read and checked against ``source_etag`` in this same transaction."""
    src = db.execute(
        f"SELECT {OBJECT_COLS} FROM objects WHERE bucket=? AND key=?", (cmd["src_bucket"], cmd["src_key"])
    ).fetchone()
    if src is None:
        raise Failed("NoSuchBucket" if not bucket_exists(db, cmd["src_bucket"]) else "NoSuchKey")
    source = object_row(src)
    if cmd.get("source_etag") and source["etag"] != cmd["source_etag"]:
        raise Failed("PreconditionFailed")
    meta = source["meta"] if cmd.get("meta") is None else {**cmd["meta"], **{
        k: source["meta"][k] for k in ("parts", "checksum", "checksum_type") if k in source["meta"]}}
    obj = {
        "size": source["size"], "etag": source["etag"], "sha256": source["sha256"],
        "content_type": cmd.get("content_type") or source["content_type"], "created": cmd["ts"],
        "meta": meta, "chunks": source["chunks"],
    }
    current = db.execute("SELECT chunks FROM objects WHERE bucket=? AND key=?", (cmd["bucket"], cmd["key"])).fetchone()
    already = {c[0] for c in unpackb(current[0])} if current is not None else set()
    add_refs(db, [c for c in source["chunks"] if c[0] not in already])
    version = replace_object(db, cmd["bucket"], cmd["key"], obj, cmd["ts"], cmd["index"], cmd.get("cond"))
    return {"version": version, "etag": obj["etag"], "created": obj["created"]}


def cmd_delete_object(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    bucket, key = cmd["bucket"], cmd["key"]
    if not bucket_exists(db, bucket):
        raise Failed("NoSuchBucket")
    old = db.execute("SELECT chunks FROM objects WHERE bucket=? AND key=?", (bucket, key)).fetchone()
    if old is None:
        return {"existed": False}
    queue_gc(db, unpackb(old[0]), cmd["ts"])
    db.execute("DELETE FROM objects WHERE bucket=? AND key=?", (bucket, key))
    return {"existed": True}


def cmd_delete_objects(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """DeleteObjects: up to 1000 keys in one entry; deleting a missing key succeeds."""
    if not bucket_exists(db, cmd["bucket"]):
        raise Failed("NoSuchBucket")
    deleted = []
    for key in cmd["keys"]:
        old = db.execute("SELECT chunks FROM objects WHERE bucket=? AND key=?", (cmd["bucket"], key)).fetchone()
        if old is not None:
            queue_gc(db, unpackb(old[0]), cmd["ts"])
            db.execute("DELETE FROM objects WHERE bucket=? AND key=?", (cmd["bucket"], key))
        deleted.append(key)
    return {"deleted": deleted}


def cmd_set_tags(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """Replace (or with ``tags`` None, remove) an object's tag set, nothing else."""
    row = db.execute("SELECT meta FROM objects WHERE bucket=? AND key=?", (cmd["bucket"], cmd["key"])).fetchone()
    if row is None:
        raise Failed("NoSuchBucket" if not bucket_exists(db, cmd["bucket"]) else "NoSuchKey")
    meta = unpackb(row[0])
    if cmd.get("tags"):
        meta["tags"] = cmd["tags"]
    else:
        meta.pop("tags", None)
    db.execute("UPDATE objects SET meta=? WHERE bucket=? AND key=?", (packb(meta), cmd["bucket"], cmd["key"]))
    return {}


def q_object(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    row = db.execute(
        f"SELECT {OBJECT_COLS} FROM objects WHERE bucket=? AND key=?", (q["bucket"], q["key"])
    ).fetchone()
    if row is None:
        raise Failed("NoSuchBucket" if not bucket_exists(db, q["bucket"]) else "NoSuchKey")
    return {"obj": object_row(row)}


def q_list(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """One page of a listing: keys and common prefixes in key order, ``max_keys`` in all.

    Every step is an indexed range scan; a common prefix is skipped in one seek, so a
    page costs O(max_keys) index lookups whatever the bucket holds.
    """
    bucket, prefix = q["bucket"], q.get("prefix", "")
    delimiter, after, max_keys = q.get("delimiter", ""), q.get("after", ""), q.get("max_keys", 1000)
    if not bucket_exists(db, bucket):
        raise Failed("NoSuchBucket")
    if max_keys <= 0:
        return page([], [], False, "")
    hi = successor(prefix)
    lo_inclusive = prefix
    contents: list[dict[str, Any]] = []
    prefixes: list[str] = []
    truncated = False
    last = ""
    while len(contents) + len(prefixes) <= max_keys:
        limit = max_keys - len(contents) - len(prefixes) + 1
        sql = "SELECT key, size, etag, created FROM objects WHERE bucket=? AND key>=? AND key>?"
        args: list[Any] = [bucket, lo_inclusive, after]
        if hi is not None:
            sql += " AND key<?"
            args.append(hi)
        rows = db.execute(sql + " ORDER BY key LIMIT ?", (*args, limit)).fetchall()
        restart = False
        for key, size, etag, created in rows:
            if delimiter:
                pos = key.find(delimiter, len(prefix))
                if pos >= 0:
                    common = key[: pos + len(delimiter)]
                    nxt = successor(common)
                    lo_inclusive = max(lo_inclusive, nxt) if nxt else lo_inclusive
                    restart = True
                    if after.startswith(common):
                        break  # already returned on an earlier page
                    if len(contents) + len(prefixes) == max_keys:
                        truncated = True
                        return page(contents, prefixes, truncated, last)
                    prefixes.append(common)
                    last = common
                    break
            if len(contents) + len(prefixes) == max_keys:
                truncated = True
                return page(contents, prefixes, truncated, last)
            contents.append({"key": key, "size": size, "etag": etag, "created": created})
            last = key
            after = key
        if not restart and len(rows) < limit:
            break
        if not rows:
            break
    return page(contents, prefixes, truncated, last)


def page(contents: list[dict[str, Any]], prefixes: list[str], truncated: bool, last: str) -> dict[str, Any]:
    return {"contents": contents, "prefixes": prefixes, "truncated": truncated, "last": last}


def q_stats(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
    return {
        "buckets": one("SELECT count(*) FROM buckets"),
        "objects": one("SELECT count(*) FROM objects"),
        "bytes": one("SELECT coalesce(sum(size), 0) FROM objects"),
        "gc_queue": one("SELECT count(*) FROM gc"),
    }


COMMANDS = {
    "put_object": cmd_put_object,
    "delete_object": cmd_delete_object,
    "delete_objects": cmd_delete_objects,
    "copy_object": cmd_copy_object,
    "set_tags": cmd_set_tags,
}
QUERIES = {"object": q_object, "list": q_list, "stats": q_stats}
