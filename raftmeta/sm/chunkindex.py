"""The chunk index: which manifests place which chunk on which blob node, kept in the
same transaction as every write of a manifest, so repair, the orphan sweep,
``replicas_lost`` and a decommission cost O(chunks on the node in question), never a
scan of every manifest (and never one inside an apply).

Two tables, both WITHOUT ROWID (the key is the row; no second b-tree):
- ``chunk_nodes`` (node, chunk, kind, a, b, n): one row per (blob node, chunk, manifest
  that places that chunk there). The manifest's identity is table-agnostic: an object
  version is (``KIND_VERSION``, bucket, key, seq), the same whether the version is the
  current object (``objects``) or noncurrent (``versions``), so moving a version between
  the tables leaves the index alone; an upload's part is (``KIND_PART``, upload id, '',
  part number).
- ``chunk_width`` (width, bucket, key, seq, chunk): one row per chunk of an object
  version, with the number of distinct nodes its manifest entry names. The repair scan
  finds chunks written (or left) with fewer replicas than wanted by a range scan of
  ``width < want``; chunks with a replica on a node that is not counted any more come
  from that node's ``chunk_nodes`` range.

Inline chunks (``[id, size, checksum, [], bytes]``) name no node and have no rows.
A manifest naming a chunk id twice (the frontend never writes one) indexes it once, with
the union of its entries' nodes.
Writers call ``add_version``/``drop_version``/``replace_version`` and the ``_part``
equivalents next to their INSERT/UPDATE/DELETE of a manifest column (``versions``,
``multipart``, ``repair``); ``check`` compares the index with a full scan (tests,
audits). A database from before the index gets it built once by ``migrate``, a pure
function of the manifests, so every replica builds the same rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from raftmeta.sm.tables import unpackb

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunk_nodes (
    node TEXT NOT NULL, chunk TEXT NOT NULL, kind INTEGER NOT NULL, a TEXT NOT NULL, b TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (node, chunk, kind, a, b, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunk_width (
    width INTEGER NOT NULL, bucket TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, chunk TEXT NOT NULL,
    PRIMARY KEY (width, bucket, key, seq, chunk)
) WITHOUT ROWID;
"""

KIND_VERSION = 0
KIND_PART = 1
INDEX_FORMAT = 1  # meta 'chunk_index': the index is complete for this database

Ref = tuple[int, str, str, int]  # (kind, a, b, n)
NodeRow = tuple[str, str, int, str, str, int]  # chunk_nodes
WidthRow = tuple[int, str, str, int, str]  # chunk_width


def entries(chunks: Iterable[list[Any]]) -> dict[str, list[str]]:
    """A manifest's chunks that live on blob nodes: chunk id -> its nodes (a node named
    twice counts once; an id named twice gets the union of its entries' nodes, so that
    no replica a manifest names is ever missing from the index: the orphan sweep
    deletes what the index does not place)."""
    out: dict[str, dict[str, None]] = {}
    for c in chunks:
        if len(c) <= 4:
            out.setdefault(c[0], {}).update(dict.fromkeys(c[3]))
    return {cid: list(nodes) for cid, nodes in out.items()}


def _rows(ref: Ref, chunks: Iterable[list[Any]]) -> tuple[set[NodeRow], set[WidthRow]]:
    kind, a, b, n = ref
    nodes: set[NodeRow] = set()
    widths: set[WidthRow] = set()
    for cid, where in entries(chunks).items():
        nodes.update((node, cid, kind, a, b, n) for node in where)
        if kind == KIND_VERSION:
            widths.add((len(where), a, b, n, cid))
    return nodes, widths


def _write(db: sqlite3.Connection, add: tuple[set[NodeRow], set[WidthRow]],
           drop: tuple[set[NodeRow], set[WidthRow]]) -> None:
    if drop[0]:
        db.executemany("DELETE FROM chunk_nodes WHERE node=? AND chunk=? AND kind=? AND a=? AND b=? AND n=?",
                       sorted(drop[0]))
    if drop[1]:
        db.executemany("DELETE FROM chunk_width WHERE width=? AND bucket=? AND key=? AND seq=? AND chunk=?",
                       sorted(drop[1]))
    if add[0]:
        db.executemany("INSERT OR IGNORE INTO chunk_nodes VALUES (?,?,?,?,?,?)", sorted(add[0]))
    if add[1]:
        db.executemany("INSERT OR IGNORE INTO chunk_width VALUES (?,?,?,?,?)", sorted(add[1]))


_NONE: tuple[set[NodeRow], set[WidthRow]] = (set(), set())


def replace(db: sqlite3.Connection, ref: Ref, old: Iterable[list[Any]], new: Iterable[list[Any]]) -> None:
    """The manifest of ``ref`` changes from ``old`` to ``new``: only the difference is
    written (repair's one-chunk updates of a 1,000-chunk manifest touch a few rows)."""
    old_nodes, old_widths = _rows(ref, old)
    new_nodes, new_widths = _rows(ref, new)
    _write(db, (new_nodes - old_nodes, new_widths - old_widths), (old_nodes - new_nodes, old_widths - new_widths))


def add_version(db: sqlite3.Connection, bucket: str, key: str, seq: int, chunks: list[list[Any]]) -> None:
    _write(db, _rows((KIND_VERSION, bucket, key, seq), chunks), _NONE)


def drop_version(db: sqlite3.Connection, bucket: str, key: str, seq: int, chunks: list[list[Any]]) -> None:
    _write(db, _NONE, _rows((KIND_VERSION, bucket, key, seq), chunks))


def replace_version(db: sqlite3.Connection, bucket: str, key: str, seq: int, old: list[list[Any]],
                    new: list[list[Any]]) -> None:
    replace(db, (KIND_VERSION, bucket, key, seq), old, new)


def add_part(db: sqlite3.Connection, upload_id: str, number: int, chunks: list[list[Any]]) -> None:
    _write(db, _rows((KIND_PART, upload_id, "", number), chunks), _NONE)


def drop_part(db: sqlite3.Connection, upload_id: str, number: int, chunks: list[list[Any]]) -> None:
    _write(db, _NONE, _rows((KIND_PART, upload_id, "", number), chunks))


# ---------------------------------------------------------------------- reading it


def refs_of(db: sqlite3.Connection, node: str, chunk: str) -> list[Ref]:
    """Every manifest that places ``chunk`` on ``node``."""
    return db.execute("SELECT kind, a, b, n FROM chunk_nodes WHERE node=? AND chunk=? ORDER BY kind, a, b, n",
                      (node, chunk)).fetchall()


def holds_any(db: sqlite3.Connection, node: str) -> bool:
    return db.execute("SELECT 1 FROM chunk_nodes WHERE node=? LIMIT 1", (node,)).fetchone() is not None


def next_node(db: sqlite3.Connection, after: str) -> str | None:
    """The smallest node id > ``after`` that holds a chunk (a skip scan: one seek)."""
    row = db.execute("SELECT node FROM chunk_nodes WHERE node>? ORDER BY node LIMIT 1", (after,)).fetchone()
    return row[0] if row else None


def node_chunks(db: sqlite3.Connection, node: str, after: str, limit: int) -> list[str]:
    """Distinct chunk ids placed on ``node`` after ``after``, ascending, ``limit`` at most."""
    return [r[0] for r in db.execute(
        "SELECT DISTINCT chunk FROM chunk_nodes WHERE node=? AND chunk>? ORDER BY chunk LIMIT ?",
        (node, after, limit))]


# ---------------------------------------------------------------------- building and checking


def _scan(db: sqlite3.Connection) -> Iterable[tuple[Ref, list[list[Any]]]]:
    """Every manifest with its identity: a full scan (``migrate``, ``check``)."""
    for table, seq in (("objects", "version"), ("versions", "seq")):
        for bucket, key, n, chunks in db.execute(f"SELECT bucket, key, {seq}, chunks FROM {table}"):
            yield (KIND_VERSION, bucket, key, n), unpackb(chunks)
    for upload_id, number, chunks in db.execute("SELECT upload_id, number, chunks FROM parts"):
        yield (KIND_PART, upload_id, "", number), unpackb(chunks)


def expected(db: sqlite3.Connection) -> tuple[set[NodeRow], set[WidthRow]]:
    """What the index must hold, from a scan of every manifest."""
    nodes: set[NodeRow] = set()
    widths: set[WidthRow] = set()
    for ref, chunks in _scan(db):
        more_nodes, more_widths = _rows(ref, chunks)
        nodes |= more_nodes
        widths |= more_widths
    return nodes, widths


def check(db: sqlite3.Connection) -> list[str]:
    """The differences between the index and a full manifest scan ([] when consistent).
    O(objects): for tests and audits, never a command."""
    nodes, widths = expected(db)
    have_nodes = set(db.execute("SELECT node, chunk, kind, a, b, n FROM chunk_nodes"))
    have_widths = set(db.execute("SELECT width, bucket, key, seq, chunk FROM chunk_width"))
    problems = [f"chunk_nodes lacks {r!r}" for r in sorted(nodes - have_nodes)]
    problems += [f"chunk_nodes has stray {r!r}" for r in sorted(have_nodes - nodes)]
    problems += [f"chunk_width lacks {r!r}" for r in sorted(widths - have_widths)]
    problems += [f"chunk_width has stray {r!r}" for r in sorted(have_widths - widths)]
    return problems


def rebuild(db: sqlite3.Connection, batch: int = 10_000) -> None:
    """Build the index from the manifests (deterministic: the same rows on every replica).
    Rows are appended to staging rowid tables as the scan finds them, then copied into
    the index in key order: b-tree appends, not random inserts (several times faster)."""
    db.execute("DELETE FROM chunk_nodes")
    db.execute("DELETE FROM chunk_width")
    db.execute("CREATE TEMP TABLE IF NOT EXISTS staging_nodes (node, chunk, kind, a, b, n)")
    db.execute("CREATE TEMP TABLE IF NOT EXISTS staging_width (width, bucket, key, seq, chunk)")
    nodes: list[NodeRow] = []
    widths: list[WidthRow] = []

    def flush() -> None:
        db.executemany("INSERT INTO staging_nodes VALUES (?,?,?,?,?,?)", nodes)
        db.executemany("INSERT INTO staging_width VALUES (?,?,?,?,?)", widths)
        nodes.clear()
        widths.clear()

    for ref, chunks in _scan(db):
        more_nodes, more_widths = _rows(ref, chunks)
        nodes.extend(more_nodes)
        widths.extend(more_widths)
        if len(nodes) + len(widths) >= batch:
            flush()
    flush()
    db.execute("INSERT OR IGNORE INTO chunk_nodes SELECT * FROM staging_nodes ORDER BY node, chunk, kind, a, b, n")
    db.execute("INSERT OR IGNORE INTO chunk_width SELECT * FROM staging_width ORDER BY width, bucket, key, seq, chunk")
    db.execute("DROP TABLE temp.staging_nodes")
    db.execute("DROP TABLE temp.staging_width")


def migrate(db: sqlite3.Connection) -> None:
    """A database (or snapshot) from before the index: build it once, in one transaction
    with the flag that says it is complete."""
    row = db.execute("SELECT v FROM meta WHERE k='chunk_index'").fetchone()
    if row is not None and int(row[0]) >= INDEX_FORMAT:
        return
    db.execute("SAVEPOINT chunk_index_build")
    try:
        rebuild(db)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('chunk_index', ?)", (INDEX_FORMAT,))
    except BaseException:
        db.execute("ROLLBACK TO chunk_index_build")
        db.execute("RELEASE chunk_index_build")
        raise
    db.execute("RELEASE chunk_index_build")


def q_chunk_index_check(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """Audit: the index against a full manifest scan (O(objects); at most 100 problems)."""
    problems = check(db)
    return {"consistent": not problems, "problems": problems[:100]}


COMMANDS: dict[str, Any] = {}
QUERIES = {"chunk_index_check": q_chunk_index_check}
