"""The metadata state machine: a SQLite database that every Raft replica applies to.

Pure of Raft: ``apply(index, cmd)`` is called once per committed log entry, in log order,
by ``raftmeta.node``; ``query(q)`` reads. Both take and return plain msgpack-able dicts.

Invariants enforced here:
- idempotent replay: the applied Raft index is stored in the same transaction as the
  change, and an entry at or below it is skipped (PySyncObj replays its journal on start);
- a retried client command (same ``rid``) applies once and gets the first result back;
- ``apply`` never raises (PySyncObj retries a replicated method that raised on every
  tick, forever): a command's own failure or a malformed command rolls back and comes
  back as ``{"ok": False, "err": code}``; an environmental failure (disk full, I/O
  error, out of memory) rolls back and stops the process (``fail_stop``), so this
  replica never skips an entry the others applied. It applies the entry on restart,
  when PySyncObj replays its journal;
- deterministic: time comes from the command (``ts``), never from the replica's clock;
- chunks that no object references any more go to the ``gc`` queue in the same
  transaction that dropped the reference, and nowhere else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import msgpack

log = logging.getLogger("raftmeta")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS requests (rid BLOB PRIMARY KEY, idx INTEGER NOT NULL, result BLOB) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS requests_idx ON requests (idx);
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, created REAL NOT NULL, acl TEXT NOT NULL DEFAULT 'private'
) WITHOUT ROWID;
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
CREATE TABLE IF NOT EXISTS gc (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, chunk TEXT NOT NULL, nodes BLOB NOT NULL, queued REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket_config (
    bucket TEXT NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (bucket, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shared (chunk TEXT PRIMARY KEY, refs INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY, addr TEXT NOT NULL, capacity INTEGER NOT NULL, used INTEGER NOT NULL,
    chunks INTEGER NOT NULL DEFAULT 0, heartbeat REAL NOT NULL, registered REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'active'
) WITHOUT ROWID;
"""

REQUEST_MEMORY = 200_000  # a retried rid is recognised for this many log entries

# An entry that fails with one of these is *invalid*: the failure is a deterministic
# function of the command and the replicated state, so every replica fails it the same
# way, and answering ``{"ok": False, "err": "Internal"}`` and moving on keeps them equal.
# - KeyError, TypeError, ValueError (UnicodeEncodeError among them: a lone surrogate),
#   IndexError, AttributeError, OverflowError: a malformed command dict (a missing
#   field, a wrong type, a manifest entry too short, an int SQLite cannot store);
# - sqlite3.IntegrityError: a constraint the command itself breaks (NOT NULL from a
#   None field, a duplicate upload id). No command catches it or relies on it to detect
#   a conflict (they check first and raise ``Failed``), and the same command on the same
#   state breaks the same constraint on every replica;
# - sqlite3.ProgrammingError, sqlite3.InterfaceError: a field of a type SQLite cannot
#   bind (a dict as a rid).
# Everything else (sqlite3.OperationalError: "database or disk is full", "disk I/O
# error", "database is locked"; sqlite3.DatabaseError: a corrupt file; MemoryError;
# OSError; a bug) may happen on one replica only, and skipping the entry there would
# make it diverge: ``apply`` fails stop instead.
INVALID_COMMAND_ERRORS: tuple[type[Exception], ...] = (
    KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError,
    sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError,
)

FAIL_STOP_EXIT_CODE = 75  # "the metadata replica could not apply a committed entry"


def fail_stop(index: int, exc: BaseException) -> None:
    """Terminate the process at once: this replica could not apply entry ``index`` for a
    reason of its own (``exc``). Not an exception: PySyncObj would retry the entry every
    tick. Not ``sys.exit``: that is an exception too, on the Raft thread. On restart the
    journal replays from the last snapshot and the entry is applied then."""
    log.critical("cannot apply committed entry %d: %r; stopping (exit code %d) rather than skip it",
                 index, exc, FAIL_STOP_EXIT_CODE)
    for handler in [*logging.getLogger().handlers, *log.handlers]:
        with contextlib.suppress(Exception):  # exiting anyway
            handler.flush()
    os._exit(FAIL_STOP_EXIT_CODE)


def _packb(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


class Failed(Exception):
    """Raised inside a command to roll it back and answer ``{ok: False, err: code}``."""

    def __init__(self, code: str, msg: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.msg = msg


def _op(cmd: Any) -> Any:
    return cmd.get("op") if isinstance(cmd, dict) else None


def successor(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix``
    (None: no upper bound). Skips the surrogate range, which SQLite cannot store."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(0xE000 if last == 0xD7FF else last + 1)
        prefix = prefix[:-1]
    return None


class MetaState:
    """One replica's SQLite metadata. ``apply`` runs on the Raft thread, ``query`` anywhere."""

    def __init__(self, path: str, fail_stop: Callable[[int, BaseException], None] | None = None) -> None:
        self.path = path
        # Called when an entry cannot be applied on this replica. None: the module's
        # ``fail_stop``, which never returns (tests pass a recorder, or monkeypatch it).
        self.fail_stop = fail_stop
        self.db = self._open(path)
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(nodes)")}
        if "state" not in columns:  # a database from before node states
            self.db.execute("ALTER TABLE nodes ADD COLUMN state TEXT NOT NULL DEFAULT 'active'")
        self.reader = self._open(path)
        # Held by every query and by a snapshot restore, which swaps the connections.
        self.reader_lock = threading.Lock()
        self.last_applied = self.applied_index()

    @staticmethod
    def _open(path: str) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # The Raft journal is the durable record (fsynced before acknowledgement);
        # this database may lose its last transactions on power loss and replays them.
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def close(self) -> None:
        self.reader.close()
        self.db.close()

    def reopen(self) -> None:
        """Close and reopen both connections, re-reading the applied index from disk."""
        with self.reader_lock:
            self.close()
            self.db = self._open(self.path)
            self.reader = self._open(self.path)
            self.last_applied = self.applied_index()

    def restore_from(self, snapshot: sqlite3.Connection) -> None:
        """Replace the whole database with ``snapshot``'s content (Raft thread)."""
        with self.reader_lock:
            self.reader.close()
            snapshot.backup(self.db)
            self.db.execute("DROP TABLE IF EXISTS raft_snapshot")
            self.db.executescript(SCHEMA)  # a snapshot from an older version may lack an index
            self.reader = self._open(self.path)
            self.last_applied = self.applied_index()

    def applied_index(self) -> int:
        row = self.db.execute("SELECT v FROM meta WHERE k='applied'").fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ writes

    def apply(self, index: int, cmd: dict[str, Any]) -> dict[str, Any]:
        """Apply one committed entry. Never raises; stops the process (``fail_stop``)
        rather than skip an entry for a reason of this replica's own."""
        try:
            return self._apply(index, cmd)
        except INVALID_COMMAND_ERRORS as exc:  # the same on every replica: answer and go on
            if self._rollback(index, exc):
                log.exception("apply of entry %d failed: %r", index, _op(cmd))
                self.last_applied = index
                return {"ok": False, "err": "Internal", "msg": repr(exc)}
        except Exception as exc:  # environmental: this replica only
            if self._rollback(index, exc):
                self._stop(index, exc)
        except BaseException:  # KeyboardInterrupt, SystemExit: leave no transaction open
            with contextlib.suppress(Exception):
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
            raise
        # Only reached when the stop hook returned (a test's): the entry is not applied.
        return {"ok": False, "err": "Internal", "msg": "entry not applied on this replica"}

    def _stop(self, index: int, exc: BaseException) -> None:
        (self.fail_stop or fail_stop)(index, exc)

    def _rollback(self, index: int, exc: BaseException) -> bool:
        """Undo a failed entry's transaction (SQLite may have rolled it back already: a
        disk-full error can end it). False, after ``fail_stop``, if that failed too."""
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            return True
        except Exception as rollback_exc:
            log.error("rollback of entry %d failed: %r (after %r)", index, rollback_exc, exc)
            self._stop(index, exc)
            return False

    def _apply(self, index: int, cmd: dict[str, Any]) -> dict[str, Any]:
        if index <= self.last_applied:
            return {"ok": False, "err": "Replayed"}
        op = cmd.get("op")
        if op == "barrier":  # changes nothing; readers wait for its index
            self.last_applied = index
            return {"ok": True, "index": index}
        handler = COMMANDS.get(op)
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        rid = cmd.get("rid")
        if rid is not None:
            row = db.execute("SELECT result FROM requests WHERE rid=?", (rid,)).fetchone()
            if row is not None:
                result = _unpackb(row[0])
                result["retried"] = True
                self._commit(index)
                return result
        if handler is None:
            result = {"ok": False, "err": "BadRequest", "msg": f"unknown command {op!r}"}
        else:
            db.execute("SAVEPOINT cmd")
            try:
                result = handler(db, {**cmd, "index": index}) or {}
                result.setdefault("ok", True)
                db.execute("RELEASE cmd")
            except Failed as exc:
                db.execute("ROLLBACK TO cmd")
                db.execute("RELEASE cmd")
                result = {"ok": False, "err": exc.code, "msg": exc.msg}
        if rid is not None:
            db.execute("INSERT INTO requests VALUES (?,?,?)", (rid, index, _packb(result)))
            self._prune_requests(index)
        self._commit(index)
        return result

    def _commit(self, index: int) -> None:
        """Record ``index`` as applied and commit, in the entry's transaction; the
        in-memory index moves only once the commit succeeded."""
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('applied', ?)", (index,))
        self.db.execute("COMMIT")
        self.last_applied = index

    def _prune_requests(self, index: int) -> None:
        # Deterministic on every replica: the last prune point is part of the state.
        row = self.db.execute("SELECT v FROM meta WHERE k='pruned'").fetchone()
        if index - (int(row[0]) if row else 0) >= 1000:
            self.db.execute("DELETE FROM requests WHERE idx < ?", (index - REQUEST_MEMORY,))
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('pruned', ?)", (index,))

    # ------------------------------------------------------------------ reads

    def query(self, q: dict[str, Any]) -> dict[str, Any]:
        try:
            name = q.get("q")
            handler = QUERIES.get(name) if isinstance(name, str) else None
            if handler is None:
                return {"ok": False, "err": "BadRequest", "msg": f"unknown query {name!r}"}
            with self.reader_lock:
                result = handler(self.reader, q)
        except Failed as exc:
            return {"ok": False, "err": exc.code, "msg": exc.msg}
        except (KeyError, TypeError, ValueError, OverflowError, sqlite3.Error) as exc:
            return {"ok": False, "err": "BadRequest", "msg": repr(exc)}
        result.setdefault("ok", True)
        return result


# ---------------------------------------------------------------------- commands


def _bucket_exists(db: sqlite3.Connection, bucket: str) -> bool:
    return db.execute("SELECT 1 FROM buckets WHERE name=?", (bucket,)).fetchone() is not None


def _queue_gc(db: sqlite3.Connection, chunks: list[list[Any]], ts: float, keep: set[str] = frozenset()) -> None:
    """Drop one reference to each chunk (except those in ``keep``). A chunk that nothing
    references any more goes to the GC queue; a shared one (CopyObject) loses a count."""
    garbage = []
    for c in chunks:
        if c[0] in keep or len(c) > 4:  # inline bytes go with their row
            continue
        row = db.execute("SELECT refs FROM shared WHERE chunk=?", (c[0],)).fetchone()
        if row is None:
            garbage.append((c[0], _packb(c[3]), ts))
        elif row[0] > 2:
            db.execute("UPDATE shared SET refs=refs-1 WHERE chunk=?", (c[0],))
        else:
            db.execute("DELETE FROM shared WHERE chunk=?", (c[0],))  # one reference left
    db.executemany("INSERT INTO gc (chunk, nodes, queued) VALUES (?,?,?)", garbage)


def _add_refs(db: sqlite3.Connection, chunks: list[list[Any]]) -> None:
    """One more reference to each chunk. Only shared chunks have a row (refs >= 2)."""
    db.executemany(
        "INSERT INTO shared VALUES (?, 2) ON CONFLICT (chunk) DO UPDATE SET refs=refs+1",
        [(c[0],) for c in chunks if len(c) <= 4],
    )


def cmd_create_bucket(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    row = db.execute("SELECT owner FROM buckets WHERE name=?", (cmd["bucket"],)).fetchone()
    if row is not None:
        raise Failed("BucketAlreadyOwnedByYou" if row[0] == cmd["owner"] else "BucketAlreadyExists")
    db.execute(
        "INSERT INTO buckets (name, owner, created, acl) VALUES (?,?,?,?)",
        (cmd["bucket"], cmd["owner"], cmd["ts"], cmd.get("acl", "private")),
    )
    return {}


def cmd_delete_bucket(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    if not _bucket_exists(db, cmd["bucket"]):
        raise Failed("NoSuchBucket")
    if db.execute("SELECT 1 FROM objects WHERE bucket=? LIMIT 1", (cmd["bucket"],)).fetchone():
        raise Failed("BucketNotEmpty")
    for (upload_id,) in db.execute("SELECT upload_id FROM uploads WHERE bucket=?", (cmd["bucket"],)).fetchall():
        multipart.drop_upload(db, upload_id, cmd["ts"])  # in-progress uploads go with the bucket
    db.execute("DELETE FROM grants WHERE bucket=?", (cmd["bucket"],))
    db.execute("DELETE FROM bucket_config WHERE bucket=?", (cmd["bucket"],))
    db.execute("DELETE FROM buckets WHERE name=?", (cmd["bucket"],))
    return {}


def replace_object(
    db: sqlite3.Connection, bucket: str, key: str, obj: dict[str, Any], ts: float, index: int,
    cond: dict[str, Any] | None = None,
) -> int:
    """Make ``obj`` the object at (bucket, key) atomically; the replaced version's chunks
    (except any the new one reuses) go to the GC queue. Returns the new version.
    ``cond`` is a conditional write, decided here so racing writers cannot both win:
    ``if_none_match`` (only if absent) and ``if_match`` (only if the ETag is one of these)."""
    if not _bucket_exists(db, bucket):
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
        _queue_gc(db, _unpackb(old[0]), ts, {c[0] for c in obj["chunks"]})
    db.execute(
        "INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            bucket, key, obj["size"], obj["etag"], obj["sha256"], obj["content_type"],
            obj["created"], index, _packb(obj.get("meta", {})), _packb(obj["chunks"]),
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
        f"SELECT {_OBJECT_COLS} FROM objects WHERE bucket=? AND key=?", (cmd["src_bucket"], cmd["src_key"])
    ).fetchone()
    if src is None:
        raise Failed("NoSuchBucket" if not _bucket_exists(db, cmd["src_bucket"]) else "NoSuchKey")
    source = _object_row(src)
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
    already = {c[0] for c in _unpackb(current[0])} if current is not None else set()
    _add_refs(db, [c for c in source["chunks"] if c[0] not in already])
    version = replace_object(db, cmd["bucket"], cmd["key"], obj, cmd["ts"], cmd["index"], cmd.get("cond"))
    return {"version": version, "etag": obj["etag"], "created": obj["created"]}


def cmd_delete_object(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    bucket, key = cmd["bucket"], cmd["key"]
    if not _bucket_exists(db, bucket):
        raise Failed("NoSuchBucket")
    old = db.execute("SELECT chunks FROM objects WHERE bucket=? AND key=?", (bucket, key)).fetchone()
    if old is None:
        return {"existed": False}
    _queue_gc(db, _unpackb(old[0]), cmd["ts"])
    db.execute("DELETE FROM objects WHERE bucket=? AND key=?", (bucket, key))
    return {"existed": True}


def cmd_delete_objects(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """DeleteObjects: up to 1000 keys in one entry; deleting a missing key succeeds."""
    if not _bucket_exists(db, cmd["bucket"]):
        raise Failed("NoSuchBucket")
    deleted = []
    for key in cmd["keys"]:
        old = db.execute("SELECT chunks FROM objects WHERE bucket=? AND key=?", (cmd["bucket"], key)).fetchone()
        if old is not None:
            _queue_gc(db, _unpackb(old[0]), cmd["ts"])
            db.execute("DELETE FROM objects WHERE bucket=? AND key=?", (cmd["bucket"], key))
        deleted.append(key)
    return {"deleted": deleted}


def cmd_set_tags(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """Replace (or with ``tags`` None, remove) an object's tag set, nothing else."""
    row = db.execute("SELECT meta FROM objects WHERE bucket=? AND key=?", (cmd["bucket"], cmd["key"])).fetchone()
    if row is None:
        raise Failed("NoSuchBucket" if not _bucket_exists(db, cmd["bucket"]) else "NoSuchKey")
    meta = _unpackb(row[0])
    if cmd.get("tags"):
        meta["tags"] = cmd["tags"]
    else:
        meta.pop("tags", None)
    db.execute("UPDATE objects SET meta=? WHERE bucket=? AND key=?", (_packb(meta), cmd["bucket"], cmd["key"]))
    return {}


def cmd_set_bucket_config(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """A bucket's sub-resource document (e.g. ``cors``); ``value`` None removes it."""
    if not _bucket_exists(db, cmd["bucket"]):
        raise Failed("NoSuchBucket")
    if cmd.get("value") is None:
        db.execute("DELETE FROM bucket_config WHERE bucket=? AND name=?", (cmd["bucket"], cmd["name"]))
    else:
        db.execute("INSERT OR REPLACE INTO bucket_config VALUES (?,?,?)", (cmd["bucket"], cmd["name"], _packb(cmd["value"])))
    return {}


def cmd_discard_chunks(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """Chunks written by an upload that failed before its commit: reclaim them."""
    _queue_gc(db, cmd["chunks"], cmd["ts"])
    return {}


def cmd_gc_done(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    db.executemany("DELETE FROM gc WHERE seq=?", [(s,) for s in cmd["seqs"]])
    return {}


def cmd_node_heartbeat(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    db.execute(
        "INSERT INTO nodes (node_id, addr, capacity, used, chunks, heartbeat, registered) VALUES (?,?,?,?,?,?,?) "
        "ON CONFLICT (node_id) DO UPDATE SET addr=excluded.addr, capacity=excluded.capacity, "
        "used=excluded.used, chunks=excluded.chunks, heartbeat=excluded.heartbeat",
        (cmd["node_id"], cmd["addr"], cmd["capacity"], cmd["used"], cmd.get("chunks", 0), cmd["ts"], cmd["ts"]),
    )
    return {}


def cmd_set_node_state(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """active | draining (no new chunks; repair moves its replicas away) | removed
    (decommissioned: refused while any manifest still places a chunk on it)."""
    state, node = cmd["state"], cmd["node_id"]
    if state not in ("active", "draining", "removed"):
        raise Failed("InvalidArgument")
    if db.execute("SELECT 1 FROM nodes WHERE node_id=?", (node,)).fetchone() is None:
        raise Failed("NoSuchNode")
    if state == "removed":
        for table in ("objects", "parts"):
            for (chunks,) in db.execute(f"SELECT chunks FROM {table}"):
                if any(node in c[3] for c in _unpackb(chunks)):
                    raise Failed("NodeNotEmpty")
    db.execute("UPDATE nodes SET state=? WHERE node_id=?", (state, node))
    return {}


COMMANDS: dict[str, Callable[[sqlite3.Connection, dict[str, Any]], dict[str, Any]]] = {
    "create_bucket": cmd_create_bucket,
    "delete_bucket": cmd_delete_bucket,
    "put_object": cmd_put_object,
    "delete_object": cmd_delete_object,
    "discard_chunks": cmd_discard_chunks,
    "delete_objects": cmd_delete_objects,
    "set_bucket_config": cmd_set_bucket_config,
    "copy_object": cmd_copy_object,
    "set_tags": cmd_set_tags,
    "gc_done": cmd_gc_done,
    "node_heartbeat": cmd_node_heartbeat,
    "set_node_state": cmd_set_node_state,
}


# ---------------------------------------------------------------------- queries

_OBJECT_COLS = "key, size, etag, sha256, content_type, created, version, meta, chunks"


def _object_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "key": row[0], "size": row[1], "etag": row[2], "sha256": row[3], "content_type": row[4],
        "created": row[5], "version": row[6], "meta": _unpackb(row[7]), "chunks": _unpackb(row[8]),
    }


def q_bucket(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    row = db.execute("SELECT owner, created, acl FROM buckets WHERE name=?", (q["bucket"],)).fetchone()
    if row is None:
        raise Failed("NoSuchBucket")
    return {"owner": row[0], "created": row[1], "acl": row[2]}


def q_buckets(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    rows = db.execute("SELECT name, created FROM buckets ORDER BY name").fetchall()
    return {"buckets": [list(r) for r in rows]}


def q_object(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    row = db.execute(
        f"SELECT {_OBJECT_COLS} FROM objects WHERE bucket=? AND key=?", (q["bucket"], q["key"])
    ).fetchone()
    if row is None:
        raise Failed("NoSuchBucket" if not _bucket_exists(db, q["bucket"]) else "NoSuchKey")
    return {"obj": _object_row(row)}


def q_list(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """One page of a listing: keys and common prefixes in key order, ``max_keys`` in all.

    Every step is an indexed range scan; a common prefix is skipped in one seek, so a
    page costs O(max_keys) index lookups whatever the bucket holds.
    """
    bucket, prefix = q["bucket"], q.get("prefix", "")
    delimiter, after, max_keys = q.get("delimiter", ""), q.get("after", ""), q.get("max_keys", 1000)
    if not _bucket_exists(db, bucket):
        raise Failed("NoSuchBucket")
    if max_keys <= 0:
        return _page([], [], False, "")
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
                        return _page(contents, prefixes, truncated, last)
                    prefixes.append(common)
                    last = common
                    break
            if len(contents) + len(prefixes) == max_keys:
                truncated = True
                return _page(contents, prefixes, truncated, last)
            contents.append({"key": key, "size": size, "etag": etag, "created": created})
            last = key
            after = key
        if not restart and len(rows) < limit:
            break
        if not rows:
            break
    return _page(contents, prefixes, truncated, last)


def _page(contents: list[dict[str, Any]], prefixes: list[str], truncated: bool, last: str) -> dict[str, Any]:
    return {"contents": contents, "prefixes": prefixes, "truncated": truncated, "last": last}


def q_bucket_config(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    if not _bucket_exists(db, q["bucket"]):
        raise Failed("NoSuchBucket")
    row = db.execute("SELECT value FROM bucket_config WHERE bucket=? AND name=?", (q["bucket"], q["name"])).fetchone()
    return {"value": _unpackb(row[0]) if row else None}


def q_nodes(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """The blob-node registry, without decommissioned nodes."""
    rows = db.execute(
        "SELECT node_id, addr, capacity, used, chunks, heartbeat, state FROM nodes WHERE state != 'removed' "
        "ORDER BY node_id"
    ).fetchall()
    keys = ("node_id", "addr", "capacity", "used", "chunks", "heartbeat", "state")
    return {"nodes": [dict(zip(keys, r, strict=True)) for r in rows]}


def q_gc_pending(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    rows = [] if q.get("limit", 1000) == 0 else db.execute(
        "SELECT seq, chunk, nodes FROM gc WHERE queued <= ? ORDER BY seq LIMIT ?",
        (q["before"], q.get("limit", 1000)),
    ).fetchall()
    total = db.execute("SELECT count(*) FROM gc").fetchone()[0]
    return {"items": [[s, c, _unpackb(n)] for s, c, n in rows], "total": total}


def q_stats(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
    return {
        "buckets": one("SELECT count(*) FROM buckets"),
        "objects": one("SELECT count(*) FROM objects"),
        "bytes": one("SELECT coalesce(sum(size), 0) FROM objects"),
        "gc_queue": one("SELECT count(*) FROM gc"),
    }


def q_chunk_refs(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """Every chunk id that an object or a live upload's part references, and those queued
    for GC (tests and audits; O(objects))."""
    ids: list[str] = []
    for (chunks,) in db.execute("SELECT chunks FROM objects"):
        ids.extend(c[0] for c in _unpackb(chunks) if len(c) <= 4)
    for (chunks,) in db.execute("SELECT chunks FROM parts"):
        ids.extend(c[0] for c in _unpackb(chunks) if len(c) <= 4)
    pending = [r[0] for r in db.execute("SELECT chunk FROM gc")]
    return {"referenced": ids, "gc": pending}


QUERIES: dict[str, Callable[[sqlite3.Connection, dict[str, Any]], dict[str, Any]]] = {
    "bucket": q_bucket,
    "buckets": q_buckets,
    "object": q_object,
    "list": q_list,
    "nodes": q_nodes,
    "bucket_config": q_bucket_config,
    "gc_pending": q_gc_pending,
    "stats": q_stats,
    "chunk_refs": q_chunk_refs,
}


# Multipart uploads and identity keep their commands and queries in their own modules.
from raftmeta import iam, members, multipart, repair  # noqa: E402

for _module in (multipart, iam, repair, members):
    SCHEMA += _module.SCHEMA
    COMMANDS.update(_module.COMMANDS)
    QUERIES.update(_module.QUERIES)
