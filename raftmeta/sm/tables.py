"""What every state-machine module shares: the failure a command raises, msgpack for
stored values, and small lookups. Imports no other module of the state machine."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import msgpack

Command = Callable[[sqlite3.Connection, dict[str, Any]], dict[str, Any]]
Query = Callable[[sqlite3.Connection, dict[str, Any]], dict[str, Any]]


def packb(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


class Failed(Exception):
    """Raised inside a command to roll it back and answer ``{ok: False, err: code}``."""

    def __init__(self, code: str, msg: str = "", **extra: Any) -> None:
        super().__init__(code)
        self.code = code
        self.msg = msg
        self.extra = extra  # more fields of the reply (a delete marker's ``marker`` and ``vid``)


def successor(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix``
    (None: no upper bound). Skips the surrogate range, which SQLite cannot store."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(0xE000 if last == 0xD7FF else last + 1)
        prefix = prefix[:-1]
    return None


def bucket_exists(db: sqlite3.Connection, bucket: str) -> bool:
    return db.execute("SELECT 1 FROM buckets WHERE name=?", (bucket,)).fetchone() is not None


def bucket_setting(db: sqlite3.Connection, bucket: str, name: str) -> Any:
    """A bucket's sub-resource document (``bucket_config``), None if unset."""
    row = db.execute("SELECT value FROM bucket_config WHERE bucket=? AND name=?", (bucket, name)).fetchone()
    return unpackb(row[0]) if row else None


def is_without_rowid(db: sqlite3.Connection, table: str) -> bool:
    row = db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()
    return row is not None and "WITHOUT ROWID" in row[0].upper()


def rebuild_as_rowid(db: sqlite3.Connection, table: str, schema: str, order: str) -> None:
    """Rebuild ``table``, written WITHOUT ROWID by an older version, as the rowid table
    ``schema`` (its module's SCHEMA: the CREATE TABLE, then its indexes) declares now.
    Deterministic on every replica: the rows are copied in ``order`` (the primary key),
    so each gets the same rowid everywhere. One savepoint: all or nothing."""
    code = "\n".join(line for line in schema.splitlines() if not line.strip().startswith("--"))
    statements = [s.strip() for s in code.split(";")]
    create = next(s for s in statements if s.upper().startswith(f"CREATE TABLE IF NOT EXISTS {table.upper()} ("))
    columns = ", ".join(f'"{r[1]}"' for r in db.execute(f"PRAGMA table_info({table})"))
    db.execute("SAVEPOINT rowid_rebuild")
    try:
        db.execute(create.replace(f"IF NOT EXISTS {table} (", f"{table}_rebuilt (", 1))
        db.execute(f"INSERT INTO {table}_rebuilt ({columns}) SELECT {columns} FROM {table} ORDER BY {order}")
        db.execute(f"DROP TABLE {table}")  # and its indexes
        db.execute(f"ALTER TABLE {table}_rebuilt RENAME TO {table}")
        for statement in statements:
            if statement.upper().startswith("CREATE INDEX"):
                db.execute(statement)
    except BaseException:
        db.execute("ROLLBACK TO rowid_rebuild")
        db.execute("RELEASE rowid_rebuild")
        raise
    db.execute("RELEASE rowid_rebuild")
