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

from raftmeta.sm import (
    acls,
    buckets,
    chunkindex,
    gcqueue,
    iam,
    lifecycle,
    members,
    multipart,
    nodes,
    objects,
    repair,
    version_listing,
    versions,
)
from raftmeta.sm.tables import Command, Failed, Query, packb, unpackb

log = logging.getLogger("raftmeta")

# The state machine's concepts, each owning its tables, commands and queries (``raftmeta/sm/``).
# ``chunkindex`` comes last: its ``migrate`` builds the index from the other modules' tables.
MODULES = (buckets, objects, versions, version_listing, gcqueue, nodes, multipart, iam, repair, members, lifecycle,
           acls, chunkindex)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS requests (rid BLOB PRIMARY KEY, idx INTEGER NOT NULL, result BLOB) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS requests_idx ON requests (idx);
""" + "".join(module.SCHEMA for module in MODULES)


def _register(kind: str) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for module in MODULES:
        for name, handler in getattr(module, kind).items():
            if name in table:
                raise RuntimeError(f"{kind[:-1].lower()} {name!r} is declared twice ({module.__name__})")
            table[name] = handler
    return table


def migrate(db: sqlite3.Connection) -> None:
    """Bring a database (or a snapshot) written by an older version up to the schema: the
    tables and indexes it lacks, then each module's ``migrate`` adds the columns its
    tables lack (so no schema index may name a column added since)."""
    db.executescript(SCHEMA)
    for module in MODULES:
        if hasattr(module, "migrate"):
            module.migrate(db)


COMMANDS: dict[str, Command] = _register("COMMANDS")
QUERIES: dict[str, Query] = _register("QUERIES")

REQUEST_MEMORY = 200_000  # a retried rid is recognised for this many log entries

# What a batch entry may hold: every command but those that write versions at several
# positions of their entry themselves (DeleteObjects, the lifecycle's expiry), and
# entries that are not commands.
BATCHABLE = frozenset(COMMANDS) - {"delete_objects", "lifecycle_apply"}

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


def _op(cmd: Any) -> Any:
    return cmd.get("op") if isinstance(cmd, dict) else None


class MetaState:
    """One replica's SQLite metadata. ``apply`` runs on the Raft thread, ``query`` anywhere."""

    def __init__(self, path: str, fail_stop: Callable[[int, BaseException], None] | None = None) -> None:
        self.path = path
        # Called when an entry cannot be applied on this replica. None: the module's
        # ``fail_stop``, which never returns (tests pass a recorder, or monkeypatch it).
        self.fail_stop = fail_stop
        self.db = self._open(path)
        migrate(self.db)
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
            migrate(self.db)  # a snapshot from an older version may lack a column or an index
            self.reader = self._open(self.path)
            self.last_applied = self.applied_index()

    def replace_with(self, path: str) -> None:
        """Make the complete, fsynced SQLite file at ``path`` (a received snapshot) the
        live database: a rename, not a copy (Raft thread; no other connection may be open
        on the database but ours)."""
        with self.reader_lock:
            self.close()  # the last connection: SQLite checkpoints and removes the WAL
            for suffix in ("-wal", "-shm"):  # an old WAL must never be replayed onto the new file
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path + suffix)
            os.replace(path, self.path)
            fd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self.db = self._open(self.path)
            migrate(self.db)  # a snapshot from an older version may lack a column or an index
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
        self.db.execute("BEGIN IMMEDIATE")
        if op == "batch":
            result = self._apply_batch(index, cmd.get("cmds"))
        else:
            result = self._apply_one(index, 0, cmd)
        if cmd.get("rid") is not None or op == "batch":
            self._prune_requests(index)
        self._commit(index)
        return result

    def _apply_batch(self, index: int, cmds: Any) -> dict[str, Any]:
        """A batch entry: several clients' commands in one Raft entry and one SQLite
        transaction, each under its own savepoint, so one command's failure never
        undoes or fails its neighbours. The command at ``position`` writes versions at
        ``seq_of(index, position)``, hence at most SEQ_SPAN commands, and none of the
        commands that take several positions themselves."""
        if not isinstance(cmds, list) or not cmds or len(cmds) > versions.SEQ_SPAN:
            return {"ok": False, "err": "BadRequest", "msg": f"a batch holds 1 to {versions.SEQ_SPAN} commands"}
        results = []
        for position, sub in enumerate(cmds):
            if not isinstance(sub, dict) or _op(sub) not in BATCHABLE:
                results.append({"ok": False, "err": "BadRequest", "msg": f"{_op(sub)!r} cannot be batched"})
            else:
                results.append(self._apply_one(index, position, sub))
        return {"ok": True, "results": results}

    def _apply_one(self, index: int, position: int, cmd: dict[str, Any]) -> dict[str, Any]:
        """One command inside the entry's open transaction, under a savepoint: its own
        failure (``Failed``, or a malformed command: ``INVALID_COMMAND_ERRORS``) rolls back
        only what it did. Anything else propagates: ``apply`` rolls back the whole entry."""
        db = self.db
        db.execute("SAVEPOINT one")
        try:
            result = self._run(index, position, cmd)
        except INVALID_COMMAND_ERRORS as exc:  # the same on every replica: answer and go on
            db.execute("ROLLBACK TO one")
            db.execute("RELEASE one")
            log.exception("command %r at position %d of entry %d failed", _op(cmd), position, index)
            return {"ok": False, "err": "Internal", "msg": repr(exc)}
        db.execute("RELEASE one")
        return result

    def _run(self, index: int, position: int, cmd: dict[str, Any]) -> dict[str, Any]:
        db = self.db
        rid = cmd.get("rid")
        if rid is not None:
            row = db.execute("SELECT result FROM requests WHERE rid=?", (rid,)).fetchone()
            if row is not None:
                result = unpackb(row[0])
                result["retried"] = True
                return result
        op = cmd.get("op")
        handler = COMMANDS.get(op) if isinstance(op, str) else None
        if handler is None:
            result = {"ok": False, "err": "BadRequest", "msg": f"unknown command {op!r}"}
        else:
            db.execute("SAVEPOINT cmd")
            try:
                if "as" in cmd:  # the caller's authorization rides in the command
                    iam.check_as(db, cmd["as"] if isinstance(cmd["as"], dict) else {})
                result = handler(db, {**cmd, "index": index, "pos": position}) or {}
                result.setdefault("ok", True)
                db.execute("RELEASE cmd")
            except Failed as exc:
                db.execute("ROLLBACK TO cmd")
                db.execute("RELEASE cmd")
                result = {**exc.extra, "ok": False, "err": exc.code, "msg": exc.msg}
        if rid is not None:
            db.execute("INSERT INTO requests VALUES (?,?,?)", (rid, index, packb(result)))
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
                # One read transaction: a query of several statements (node_refs scans
                # objects, then versions, then parts) sees one snapshot, never a version
                # mid-move between tables.
                self.reader.execute("BEGIN")
                try:
                    result = handler(self.reader, q)
                finally:
                    self.reader.execute("COMMIT")
        except Failed as exc:
            return {**exc.extra, "ok": False, "err": exc.code, "msg": exc.msg}
        except (KeyError, TypeError, ValueError, OverflowError, sqlite3.Error) as exc:
            return {"ok": False, "err": "BadRequest", "msg": repr(exc)}
        result.setdefault("ok", True)
        return result
