"""Versions: every version of a key that is not its current object, and the rules that
move versions between the two tables, inside the Raft apply.

A key's history lives in exactly two places. ``objects`` (module ``objects``) holds the
key's latest version when that is an object, so listing current objects scans only
them however many old versions pile up. ``versions`` holds the rest, newest first:
noncurrent versions and every delete marker (a latest marker included). Invariant, kept
by every function here: a key has an ``objects`` row iff its newest version is not a
delete marker, and that row is the newest version.

A version's order is ``seq``: ``raft index * SEQ_SPAN + position in the entry`` (an entry
may write several: DeleteObjects, or a batch entry's commands, each at its own position), unique and time-ordered; an object of a bucket
never versioned keeps the plain Raft index, which orders below every later seq. Its id is ``seq`` in
hex, or ``null`` for a version written while the bucket was never versioned or
suspended (``null_id``); a key has at most one null version.

Object lock is decided here as well (the rules are ``objectlock``'s), so no race between
frontends gets around it: every removal of a version goes through ``remove``, which
refuses a version under legal hold or unexpired retention (COMPLIANCE for everyone,
GOVERNANCE unless ``bypass``, which the frontend sets for a principal allowed to).
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import Any

from raftmeta.sm import chunkindex
from raftmeta.sm.gcqueue import add_refs, queue_gc
from raftmeta.sm.objectlock import LOCKED, apply_lock_defaults, check_retention_change, locked
from raftmeta.sm.tables import (
    Failed,
    bucket_exists,
    bucket_setting,
    is_without_rowid,
    packb,
    rebuild_as_rowid,
    unpackb,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    bucket TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL,
    null_id INTEGER NOT NULL, marker INTEGER NOT NULL,
    size INTEGER NOT NULL, etag TEXT NOT NULL, sha256 TEXT NOT NULL, content_type TEXT NOT NULL,
    created REAL NOT NULL, superseded REAL, meta BLOB NOT NULL, chunks BLOB NOT NULL,
    PRIMARY KEY (bucket, key, seq DESC)
);
CREATE INDEX IF NOT EXISTS versions_null ON versions (bucket, key) WHERE null_id=1;
-- status counts noncurrent versions, markers and their bytes without reading manifests
CREATE INDEX IF NOT EXISTS versions_stats ON versions (marker, size);
"""



def migrate(db: sqlite3.Connection) -> None:
    """A WITHOUT ROWID table from an older version is rebuilt as a rowid table (a row
    with a 1 KiB inline object stays on its page: ``objects``' SCHEMA says why)."""
    if is_without_rowid(db, "versions"):
        rebuild_as_rowid(db, "versions", SCHEMA, "bucket, key, seq DESC")


SEQ_SPAN = 1024  # versions one entry may write (DeleteObjects: at most 1000 keys)
NULL = "null"
_HEX = re.compile(r"[0-9a-f]{16}")

V_COLS = "seq, null_id, marker, size, etag, sha256, content_type, created, superseded, meta, chunks"
O_COLS = "version, null_id, 0, size, etag, sha256, content_type, created, NULL, meta, chunks"


def seq_of(index: int, position: int = 0) -> int:
    return index * SEQ_SPAN + position


def seq_for(state: str, index: int, position: int = 0) -> int:
    """The seq of a version an entry writes in a bucket of versioning ``state``: never
    versioned, the Raft index itself, as before versioning existed (an entry from then,
    replayed now, must give every replica the same row); else ``seq_of`` (always larger).
    ``position``: the command's place in a batch entry (``MetaState``), so that two
    commands of one entry never write the same seq."""
    return seq_of(index, position) if state else index


def vid_of(seq: int, null_id: int | bool) -> str:
    return NULL if null_id else f"{seq:016x}"


def parse_vid(vid: str) -> int | None:
    """A version id -> its seq (None for ``null``); anything else is the client's error."""
    if vid == NULL:
        return None
    if not isinstance(vid, str) or not _HEX.fullmatch(vid):
        raise Failed("InvalidArgument", "Invalid version id specified")
    return int(vid, 16)


@dataclass
class Version:
    """One version of a key, wherever it is stored (``current``: the objects row)."""

    bucket: str
    key: str
    seq: int
    null_id: bool
    marker: bool
    size: int
    etag: str
    sha256: str
    content_type: str
    created: float
    superseded: float | None
    meta: dict[str, Any]
    chunks: list[list[Any]]
    current: bool

    @property
    def vid(self) -> str:
        return vid_of(self.seq, self.null_id)

    def as_obj(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "etag": self.etag, "sha256": self.sha256,
                "content_type": self.content_type, "created": self.created, "version": self.seq,
                "meta": self.meta, "chunks": self.chunks, "vid": self.vid}


def _version(bucket: str, key: str, row: tuple[Any, ...], current: bool) -> Version:
    return Version(bucket, key, row[0], bool(row[1]), bool(row[2]), row[3], row[4], row[5], row[6], row[7],
                   row[8], unpackb(row[9]), unpackb(row[10]), current)


# ---------------------------------------------------------------------- bucket state


def versioning(db: sqlite3.Connection, bucket: str) -> str:
    """'' (never versioned), 'Enabled' or 'Suspended'."""
    return bucket_setting(db, bucket, "versioning") or ""


# ---------------------------------------------------------------------- finding versions


def current(db: sqlite3.Connection, bucket: str, key: str) -> Version | None:
    row = db.execute(f"SELECT {O_COLS} FROM objects WHERE bucket=? AND key=?", (bucket, key)).fetchone()
    return _version(bucket, key, row, True) if row else None


def newest_noncurrent(db: sqlite3.Connection, bucket: str, key: str) -> Version | None:
    row = db.execute(f"SELECT {V_COLS} FROM versions WHERE bucket=? AND key=? ORDER BY seq DESC LIMIT 1",
                     (bucket, key)).fetchone()
    return _version(bucket, key, row, False) if row else None


def latest(db: sqlite3.Connection, bucket: str, key: str) -> Version | None:
    """The key's newest version: its object, else its newest marker (None: no history)."""
    return current(db, bucket, key) or newest_noncurrent(db, bucket, key)


def find(db: sqlite3.Connection, bucket: str, key: str, vid: str) -> Version | None:
    seq = parse_vid(vid)
    if seq is None:
        row = db.execute(f"SELECT {O_COLS} FROM objects WHERE bucket=? AND key=? AND null_id=1",
                         (bucket, key)).fetchone()
        if row:
            return _version(bucket, key, row, True)
        row = db.execute(f"SELECT {V_COLS} FROM versions INDEXED BY versions_null "
                         "WHERE bucket=? AND key=? AND null_id=1", (bucket, key)).fetchone()
        return _version(bucket, key, row, False) if row else None
    row = db.execute(f"SELECT {O_COLS} FROM objects WHERE bucket=? AND key=? AND version=? AND null_id=0",
                     (bucket, key, seq)).fetchone()
    if row:
        return _version(bucket, key, row, True)
    row = db.execute(f"SELECT {V_COLS} FROM versions WHERE bucket=? AND key=? AND seq=? AND null_id=0",
                     (bucket, key, seq)).fetchone()
    return _version(bucket, key, row, False) if row else None


def addressed(db: sqlite3.Connection, bucket: str, key: str, vid: str | None) -> Version:
    """The version a read names: ``vid``, else the latest. A missing one fails with S3's
    code; a delete marker fails too (NoSuchKey when it is the latest, MethodNotAllowed
    when named), its reply carrying ``marker`` and ``vid`` for the response headers."""
    if not bucket_exists(db, bucket):
        raise Failed("NoSuchBucket")
    version = latest(db, bucket, key) if vid is None else find(db, bucket, key, vid)
    if version is None:
        raise Failed("NoSuchKey" if vid is None else "NoSuchVersion")
    if version.marker:
        raise Failed("NoSuchKey" if vid is None else "MethodNotAllowed", "",
                     marker=True, vid=version.vid, created=version.created)
    return version


# ---------------------------------------------------------------------- moving versions


def _insert(db: sqlite3.Connection, v: Version) -> None:
    db.execute(
        f"INSERT INTO versions ({V_COLS}, bucket, key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (v.seq, int(v.null_id), int(v.marker), v.size, v.etag, v.sha256, v.content_type, v.created,
         v.superseded, packb(v.meta), packb(v.chunks), v.bucket, v.key),
    )
    chunkindex.add_version(db, v.bucket, v.key, v.seq, v.chunks)


def _supersede(db: sqlite3.Connection, bucket: str, key: str, ts: float) -> None:
    """The key's latest version becomes noncurrent at ``ts`` (a newer one follows). The
    current row moves table to table in SQL: its manifest is never unpacked (nor is the
    chunk index touched: a version's identity there is the same in either table)."""
    moved = db.execute(
        f"INSERT INTO versions ({V_COLS}, bucket, key) SELECT version, null_id, 0, size, etag, sha256, content_type, "
        "created, ?, meta, chunks, bucket, key FROM objects WHERE bucket=? AND key=?", (ts, bucket, key)).rowcount
    if moved:
        db.execute("DELETE FROM objects WHERE bucket=? AND key=?", (bucket, key))
        return
    top = newest_noncurrent(db, bucket, key)
    if top is not None and top.superseded is None:
        db.execute("UPDATE versions SET superseded=? WHERE bucket=? AND key=? AND seq=?", (ts, bucket, key, top.seq))


def _promote(db: sqlite3.Connection, bucket: str, key: str) -> None:
    """After a removal: the newest remaining version is the latest again; an object
    moves back to ``objects`` (same identity in the chunk index: no index write)."""
    if current(db, bucket, key) is not None:
        return
    top = newest_noncurrent(db, bucket, key)
    if top is None:
        return
    if top.marker:
        db.execute("UPDATE versions SET superseded=NULL WHERE bucket=? AND key=? AND seq=?", (bucket, key, top.seq))
        return
    db.execute("DELETE FROM versions WHERE bucket=? AND key=? AND seq=?", (bucket, key, top.seq))
    db.execute(
        "INSERT INTO objects (bucket, key, size, etag, sha256, content_type, created, version, meta, chunks, "
        "null_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (bucket, key, top.size, top.etag, top.sha256, top.content_type, top.created, top.seq,
         packb(top.meta), packb(top.chunks), int(top.null_id)),
    )


def remove(db: sqlite3.Connection, version: Version, ts: float, bypass: bool = False, promote: bool = True,
           keep: set[str] = frozenset()) -> None:
    """Delete one version for good (its chunks, but those in ``keep``, to the GC queue),
    unless object lock keeps it; then the newest remaining version is the latest."""
    if locked(version.meta, ts, bypass):
        raise Failed("AccessDenied", LOCKED)
    queue_gc(db, version.chunks, ts, keep)
    chunkindex.drop_version(db, version.bucket, version.key, version.seq, version.chunks)
    if version.current:
        db.execute("DELETE FROM objects WHERE bucket=? AND key=?", (version.bucket, version.key))
    else:
        db.execute("DELETE FROM versions WHERE bucket=? AND key=? AND seq=?", (version.bucket, version.key, version.seq))
    if promote:
        _promote(db, version.bucket, version.key)


def _drop_null(db: sqlite3.Connection, bucket: str, key: str, ts: float, keep: set[str] = frozenset()) -> None:
    """A new null version replaces the key's old one (suspended bucket)."""
    old = find(db, bucket, key, NULL)
    if old is not None:
        remove(db, old, ts, promote=False, keep=keep)


def write(db: sqlite3.Connection, bucket: str, key: str, obj: dict[str, Any], ts: float, seq: int,
          keep: set[str] = frozenset(), integrity: bool = True, state: str | None = None) -> str:
    """Make ``obj`` the key's newest version as the bucket's versioning state says:
    never versioned, it replaces the object; enabled, the object before it becomes
    noncurrent; suspended, it replaces the null version. A replaced version's chunks
    in ``keep`` stay referenced (the new version reuses them). Returns its version id.
    ``state``: the bucket's versioning, if the caller has read it already."""
    state = versioning(db, bucket) if state is None else state
    apply_lock_defaults(db, bucket, obj, ts, integrity)
    null_id = state != "Enabled"
    if state == "":
        old = current(db, bucket, key)
        if old is not None:
            remove(db, old, ts, promote=False, keep=keep)
    else:
        if state == "Suspended":
            _drop_null(db, bucket, key, ts, keep)
        row = db.execute("SELECT chunks FROM objects WHERE bucket=? AND key=?", (bucket, key)).fetchone() \
            if keep else None
        if row is not None:  # kept as noncurrent: a chunk both manifests name gains a reference
            shared = {b[0] for b in unpackb(row[0])}.intersection(keep)  # (CopyObject counted its own)
            add_refs(db, [c for c in obj["chunks"] if c[0] in shared])
        _supersede(db, bucket, key, ts)
    db.execute(
        "INSERT INTO objects (bucket, key, size, etag, sha256, content_type, created, version, meta, chunks, "
        "null_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (bucket, key, obj["size"], obj["etag"], obj["sha256"], obj["content_type"], obj["created"], seq,
         packb(obj.get("meta", {})), packb(obj["chunks"]), int(null_id)),
    )
    chunkindex.add_version(db, bucket, key, seq, obj["chunks"])
    return vid_of(seq, null_id)


def delete_latest(db: sqlite3.Connection, bucket: str, key: str, ts: float, seq: int) -> dict[str, Any]:
    """DELETE without a version id: never versioned, the object goes; otherwise a delete
    marker becomes the newest version (``null`` in a suspended bucket)."""
    state = versioning(db, bucket)
    if state == "":
        old = current(db, bucket, key)
        if old is not None:
            remove(db, old, ts, promote=False)
        return {"existed": old is not None}
    if state == "Suspended":
        _drop_null(db, bucket, key, ts)
    _supersede(db, bucket, key, ts)
    null_id = state == "Suspended"
    _insert(db, Version(bucket, key, seq, null_id, True, 0, "", "", "", ts, None, {}, [], False))
    return {"existed": True, "marker": True, "vid": vid_of(seq, null_id)}


def delete_version(db: sqlite3.Connection, bucket: str, key: str, vid: str, ts: float,
                   bypass: bool = False) -> dict[str, Any]:
    """DELETE with a version id: that version goes for good (a missing one is no error)."""
    version = find(db, bucket, key, vid)
    if version is None:
        return {"existed": False, "vid": vid}
    remove(db, version, ts, bypass)
    return {"existed": True, "vid": vid, **({"marker": True} if version.marker else {})}


def update_meta(db: sqlite3.Connection, version: Version, meta: dict[str, Any]) -> None:
    if version.current:
        db.execute("UPDATE objects SET meta=? WHERE bucket=? AND key=?", (packb(meta), version.bucket, version.key))
    else:
        db.execute("UPDATE versions SET meta=? WHERE bucket=? AND key=? AND seq=?",
                   (packb(meta), version.bucket, version.key, version.seq))


# ---------------------------------------------------------------------- manifests by seq (repair)


def manifest_at(db: sqlite3.Connection, bucket: str, key: str, seq: int) -> list[list[Any]] | None:
    row = db.execute("SELECT chunks FROM objects WHERE bucket=? AND key=? AND version=?", (bucket, key, seq)).fetchone()
    if row is None:
        row = db.execute("SELECT chunks FROM versions WHERE bucket=? AND key=? AND seq=?", (bucket, key, seq)).fetchone()
    return unpackb(row[0]) if row else None


def set_manifest(db: sqlite3.Connection, bucket: str, key: str, seq: int, chunks: list[list[Any]],
                 old: list[list[Any]] | None = None) -> None:
    """Replace a version's manifest (repair); ``old``: its manifest now, if read already."""
    old = manifest_at(db, bucket, key, seq) if old is None else old
    if old is None:
        return
    chunkindex.replace_version(db, bucket, key, seq, old, chunks)
    db.execute("UPDATE objects SET chunks=? WHERE bucket=? AND key=? AND version=?", (packb(chunks), bucket, key, seq))
    db.execute("UPDATE versions SET chunks=? WHERE bucket=? AND key=? AND seq=?", (packb(chunks), bucket, key, seq))


MANIFEST_TABLES = ("objects", "versions")  # every table whose rows carry an object's manifest
# (every write of their ``chunks`` keeps ``chunkindex`` in step, in the same transaction)


# ---------------------------------------------------------------------- bucket commands

_STATES = ("Enabled", "Suspended")


def cmd_set_versioning(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """PutBucketVersioning: never versioned -> Enabled <-> Suspended, never back; a bucket
    with object lock stays Enabled."""
    bucket, status = cmd["bucket"], cmd["status"]
    if not bucket_exists(db, bucket):
        raise Failed("NoSuchBucket")
    if status not in _STATES:
        raise Failed("IllegalVersioningConfigurationException",
                     "The Versioning element must be specified")
    if status == "Suspended" and bucket_setting(db, bucket, "object_lock"):
        raise Failed("InvalidBucketState", "An Object Lock configuration is present on this bucket, "
                     "so the versioning state cannot be changed.")
    db.execute("INSERT OR REPLACE INTO bucket_config VALUES (?,?,?)", (bucket, "versioning", packb(status)))
    return {}


def cmd_set_object_lock(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """PutObjectLockConfiguration: only on a versioning-enabled bucket, and once on it
    stays on (the default retention may change)."""
    bucket, config = cmd["bucket"], dict(cmd["config"])
    if not bucket_exists(db, bucket):
        raise Failed("NoSuchBucket")
    if not config.get("enabled"):
        raise Failed("MalformedXML")
    if versioning(db, bucket) != "Enabled":
        raise Failed("InvalidBucketState", "Versioning must be 'Enabled' on the bucket to apply a Object Lock "
                     "configuration")
    if config.get("mode") not in (None, "GOVERNANCE", "COMPLIANCE"):
        raise Failed("MalformedXML")
    db.execute("INSERT OR REPLACE INTO bucket_config VALUES (?,?,?)", (bucket, "object_lock", packb(config)))
    return {}


def enable_lock_at_creation(db: sqlite3.Connection, bucket: str) -> None:
    """CreateBucket with object lock: versioning Enabled and lock on, in the same entry."""
    db.execute("INSERT OR REPLACE INTO bucket_config VALUES (?,?,?)", (bucket, "versioning", packb("Enabled")))
    db.execute("INSERT OR REPLACE INTO bucket_config VALUES (?,?,?)", (bucket, "object_lock", packb({"enabled": True})))


# ---------------------------------------------------------------------- retention and legal hold


def _lockable(db: sqlite3.Connection, cmd: dict[str, Any]) -> Version:
    if not bucket_exists(db, cmd["bucket"]):
        raise Failed("NoSuchBucket")
    if not bucket_setting(db, cmd["bucket"], "object_lock"):
        raise Failed("InvalidRequest", "Bucket is missing Object Lock Configuration")
    return addressed(db, cmd["bucket"], cmd["key"], cmd.get("vid"))


def cmd_set_retention(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """PutObjectRetention. COMPLIANCE can only be extended; GOVERNANCE can be shortened,
    changed or removed only with ``bypass``; any retention can be extended."""
    version, ts, new = _lockable(db, cmd), cmd["ts"], cmd.get("retention")
    if new is not None and (new[0] not in ("GOVERNANCE", "COMPLIANCE") or new[1] <= ts):
        raise Failed("InvalidArgument", "The retain until date must be in the future!")
    check_retention_change(version.meta.get("retention"), new, ts, bool(cmd.get("bypass")))
    meta = version.meta
    if new is None:
        meta.pop("retention", None)
    else:
        meta["retention"] = [new[0], float(new[1])]
    update_meta(db, version, meta)
    return {"vid": version.vid}


def cmd_set_legal_hold(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    version = _lockable(db, cmd)
    meta = version.meta
    meta["hold"] = bool(cmd["hold"])  # OFF is remembered: GetObjectLegalHold answers OFF, not "none"
    update_meta(db, version, meta)
    return {"vid": version.vid}


QUERIES: dict[str, Any] = {}  # ListObjectVersions: ``version_listing``

COMMANDS = {
    "set_versioning": cmd_set_versioning,
    "set_object_lock": cmd_set_object_lock,
    "set_retention": cmd_set_retention,
    "set_legal_hold": cmd_set_legal_hold,
}
