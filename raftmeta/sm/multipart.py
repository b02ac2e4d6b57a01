"""Multipart uploads in the metadata state machine: commands and queries.

An upload and its parts (each with its own chunk manifest) live here, so any frontend
can take any part and see every other part at once. The rules that keep storage exact:
- a part committed to an upload that no longer exists (aborted, completed, expired)
  sends its chunks straight to the GC queue and answers NoSuchUpload;
- a part re-uploaded under the same number sends the replaced part's chunks to GC;
- Complete builds the object from the listed parts' chunks (no byte is copied), sends
  the chunks of unlisted parts to GC, and remembers its result so that a retried
  Complete of the same part list returns the same object;
- Abort and expiry send every part's chunks to GC.
"""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

from raftmeta.sm import chunkindex
from raftmeta.sm.gcqueue import queue_gc
from raftmeta.sm.objects import replace_object
from raftmeta.sm.tables import Failed, bucket_exists, packb, unpackb

SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL, created REAL NOT NULL,
    initiator TEXT NOT NULL, content_type TEXT NOT NULL, meta BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (bucket, key, created, upload_id);
CREATE INDEX IF NOT EXISTS uploads_by_age ON uploads (created);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL, number INTEGER NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL,
    created REAL NOT NULL, checksum BLOB NOT NULL, chunks BLOB NOT NULL,
    PRIMARY KEY (upload_id, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS completed (
    upload_id TEXT PRIMARY KEY, digest BLOB NOT NULL, result BLOB NOT NULL, at REAL NOT NULL
) WITHOUT ROWID;
"""

MIN_PART_SIZE = 5 * 1024 * 1024
COMPLETED_MEMORY = 7 * 86400.0  # seconds a completed upload id answers retried Completes


def _upload(db: sqlite3.Connection, upload_id: str, bucket: str | None = None, key: str | None = None) -> tuple:
    row = db.execute(
        "SELECT bucket, key, created, initiator, content_type, meta FROM uploads WHERE upload_id=?", (upload_id,)
    ).fetchone()
    if row is None or (bucket is not None and row[0] != bucket) or (key is not None and row[1] != key):
        raise Failed("NoSuchUpload")
    return row


def drop_upload(db: sqlite3.Connection, upload_id: str, ts: float, keep: set[str] = frozenset()) -> int:
    count = 0
    for number, chunks in db.execute("SELECT number, chunks FROM parts WHERE upload_id=?", (upload_id,)).fetchall():
        manifest = unpackb(chunks)
        queue_gc(db, manifest, ts, keep)
        chunkindex.drop_part(db, upload_id, number, manifest)
        count += 1
    db.execute("DELETE FROM parts WHERE upload_id=?", (upload_id,))
    db.execute("DELETE FROM uploads WHERE upload_id=?", (upload_id,))
    return count


# ---------------------------------------------------------------------- commands


def cmd_create_upload(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    if not bucket_exists(db, cmd["bucket"]):
        raise Failed("NoSuchBucket")
    db.execute(
        "INSERT INTO uploads VALUES (?,?,?,?,?,?,?)",
        (cmd["upload_id"], cmd["bucket"], cmd["key"], cmd["ts"], cmd.get("initiator", ""),
         cmd.get("content_type", "binary/octet-stream"), packb(cmd.get("meta", {}))),
    )
    return {}


def cmd_put_part(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    part = cmd["part"]
    row = db.execute("SELECT bucket, key FROM uploads WHERE upload_id=?", (cmd["upload_id"],)).fetchone()
    if row is None or row[0] != cmd["bucket"] or row[1] != cmd["key"]:
        # The upload ended while this part streamed in: its chunks are garbage now.
        # (Returned, not raised: the GC entries must commit.)
        queue_gc(db, part["chunks"], cmd["ts"])
        return {"ok": False, "err": "NoSuchUpload"}
    old = db.execute(
        "SELECT chunks FROM parts WHERE upload_id=? AND number=?", (cmd["upload_id"], cmd["number"])
    ).fetchone()
    if old is not None:
        queue_gc(db, unpackb(old[0]), cmd["ts"], {c[0] for c in part["chunks"]})
    chunkindex.replace(db, (chunkindex.KIND_PART, cmd["upload_id"], "", cmd["number"]),
                       unpackb(old[0]) if old is not None else [], part["chunks"])
    db.execute(
        "INSERT OR REPLACE INTO parts VALUES (?,?,?,?,?,?,?)",
        (cmd["upload_id"], cmd["number"], part["size"], part["etag"], cmd["ts"],
         packb(part.get("checksum", {})), packb(part["chunks"])),
    )
    return {}


def parts_digest(parts: list[list[Any]]) -> bytes:
    return hashlib.sha256(packb([[int(n), str(e)] for n, e in parts])).digest()


def cmd_complete_upload(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """``parts``: [[number, etag]] as the client listed them (ascending, checked by the
    frontend too). ``obj``: the object's fields the frontend computed from those parts.
    ``part_checksums``: keep each part's checksums in the object's part table
    (``meta.parts``: [size, etag, chunk count, {algorithm: base64}], the last only for a
    part that has one), for GetObjectAttributes and GET of one part."""
    upload_id, listed = cmd["upload_id"], cmd["parts"]
    digest = parts_digest(listed)
    row = db.execute("SELECT bucket, key FROM uploads WHERE upload_id=?", (upload_id,)).fetchone()
    if row is None:
        done = db.execute("SELECT digest, result FROM completed WHERE upload_id=?", (upload_id,)).fetchone()
        if done is not None and done[0] == digest:
            return {**unpackb(done[1]), "retried": True}
        raise Failed("NoSuchUpload")
    if row[0] != cmd["bucket"] or row[1] != cmd["key"]:
        raise Failed("NoSuchUpload")
    if not listed:
        raise Failed("MalformedXML")
    stored = {
        n: (size, etag, unpackb(chunks), checksum)
        for n, size, etag, chunks, checksum in db.execute(
            "SELECT number, size, etag, chunks, checksum FROM parts WHERE upload_id=?", (upload_id,)
        )
    }
    # Commands from before part checksums were kept lack the flag: their replay builds
    # the part table they built then (three fields a part).
    keep_checksums = bool(cmd.get("part_checksums"))
    chunks: list[list[Any]] = []
    part_table: list[list[Any]] = []
    previous = 0
    for i, (number, etag) in enumerate(listed):
        if number <= previous:
            raise Failed("InvalidPartOrder")
        previous = number
        part = stored.get(number)
        if part is None or part[1] != etag.strip('"'):
            raise Failed("InvalidPart")
        if part[0] < MIN_PART_SIZE and i != len(listed) - 1:
            raise Failed("EntityTooSmall")
        chunks.extend(part[2])
        checksum = unpackb(part[3]) if keep_checksums else {}
        part_table.append([part[0], part[1], len(part[2])] + ([checksum] if checksum else []))
    obj = dict(cmd["obj"])
    obj["chunks"] = chunks
    obj["size"] = sum(p[0] for p in part_table)
    obj.setdefault("meta", {})["parts"] = part_table
    written = replace_object(db, cmd["bucket"], cmd["key"], obj, cmd["ts"], cmd["index"], cmd.get("cond"),
                             position=cmd.get("pos", 0))
    used = {c[0] for c in chunks}
    drop_upload(db, upload_id, cmd["ts"], keep=used)
    result = {**written, "etag": obj["etag"], "size": obj["size"]}
    db.execute("INSERT OR REPLACE INTO completed VALUES (?,?,?,?)", (upload_id, digest, packb(result), cmd["ts"]))
    db.execute("DELETE FROM completed WHERE at < ?", (cmd["ts"] - COMPLETED_MEMORY,))
    return result


def cmd_abort_upload(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    _upload(db, cmd["upload_id"], cmd.get("bucket"), cmd.get("key"))
    return {"parts": drop_upload(db, cmd["upload_id"], cmd["ts"])}


def cmd_expire_uploads(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """Abort every upload initiated before ``before`` (deterministic: the proposer chose
    the cut-off). At most ``limit`` per command so one entry stays small."""
    ids = [r[0] for r in db.execute(
        "SELECT upload_id FROM uploads WHERE created < ? ORDER BY created LIMIT ?", (cmd["before"], cmd.get("limit", 1000))
    )]
    for upload_id in ids:
        drop_upload(db, upload_id, cmd["ts"])
    return {"aborted": ids}


COMMANDS = {
    "create_upload": cmd_create_upload,
    "put_part": cmd_put_part,
    "complete_upload": cmd_complete_upload,
    "abort_upload": cmd_abort_upload,
    "expire_uploads": cmd_expire_uploads,
}


# ---------------------------------------------------------------------- queries


def q_upload(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    bucket, key, created, initiator, content_type, meta = _upload(db, q["upload_id"], q.get("bucket"), q.get("key"))
    return {"bucket": bucket, "key": key, "created": created, "initiator": initiator,
            "content_type": content_type, "meta": unpackb(meta)}


def q_parts(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """Parts after ``after`` in number order, ``limit`` at most; with ``chunks`` only
    when asked (Complete needs sizes, ETags and checksums, not manifests)."""
    upload = q_upload(db, q)
    limit = int(q.get("limit", 1000))
    rows = db.execute(
        "SELECT number, size, etag, created, checksum FROM parts WHERE upload_id=? AND number>? ORDER BY number LIMIT ?",
        (q["upload_id"], int(q.get("after", 0)), limit + 1),
    ).fetchall()
    parts = [{"number": n, "size": s, "etag": e, "created": c, "checksum": unpackb(ck)} for n, s, e, c, ck in rows[:limit]]
    return {"upload": upload, "parts": parts, "truncated": len(rows) > limit}


def q_uploads(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """ListMultipartUploads: uploads by key then initiation, after (key_marker,
    upload_id_marker), grouped by delimiter, ``max_uploads`` entries in all."""
    bucket, prefix, delimiter = q["bucket"], q.get("prefix", ""), q.get("delimiter", "")
    key_marker, id_marker, limit = q.get("key_marker", ""), q.get("upload_id_marker", ""), int(q.get("max_uploads", 1000))
    if not bucket_exists(db, bucket):
        raise Failed("NoSuchBucket")
    start: tuple[Any, ...] = ()
    if key_marker and id_marker:
        marker = db.execute("SELECT created FROM uploads WHERE upload_id=? AND bucket=? AND key=?",
                            (id_marker, bucket, key_marker)).fetchone()
        start = (key_marker, marker[0], id_marker) if marker else (key_marker, float("inf"), "")
    elif key_marker:
        start = (key_marker, float("inf"), "")
    rows = db.execute(
        "SELECT upload_id, key, created, initiator FROM uploads WHERE bucket=? AND key>=? ORDER BY key, created, upload_id",
        (bucket, max(prefix, start[0] if start else "")),
    )
    uploads: list[dict[str, Any]] = []
    prefixes: list[str] = []
    truncated = False
    for upload_id, key, created, initiator in rows:
        if not key.startswith(prefix):
            if key > prefix:
                break
            continue
        if start and (key, created, upload_id) <= start:
            continue
        common = None
        if delimiter:
            pos = key.find(delimiter, len(prefix))
            if pos >= 0:
                common = key[: pos + len(delimiter)]
                if (prefixes and prefixes[-1] == common) or (key_marker and key_marker.startswith(common)):
                    continue
        if len(uploads) + len(prefixes) >= limit:
            truncated = True
            break
        if common is not None:
            prefixes.append(common)
        else:
            uploads.append({"upload_id": upload_id, "key": key, "created": created, "initiator": initiator})
    return {"uploads": uploads, "prefixes": prefixes, "truncated": truncated}


def q_expired(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    count = db.execute("SELECT count(*) FROM uploads WHERE created < ?", (q["before"],)).fetchone()[0]
    total = db.execute("SELECT count(*) FROM uploads").fetchone()[0]
    return {"expired": count, "uploads": total}


QUERIES = {"upload": q_upload, "parts": q_parts, "uploads": q_uploads, "expired": q_expired}
