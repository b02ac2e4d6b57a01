"""Inline objects' rows stay on their page: ``objects`` and ``versions`` are rowid tables
(a table b-tree leaf keeps ~4 KB of a row locally, an index b-tree's, as WITHOUT ROWID
tables are, ~1 KB), and a database written by a version with WITHOUT ROWID tables is
rebuilt by ``migrate``, the same on every replica. Helpers: ``tests.unit.metastate``."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from raftmeta.sm import chunkindex, objects, versions
from raftmeta.sm.tables import is_without_rowid
from raftmeta.state import MetaState
from tests.unit.metastate import Replica, chunk, create, delete, obj, put


def inline_obj(i: int, created: float = 1.0) -> dict:
    data = bytes([i % 256]) * 1024
    return obj([[f"i{i}", 1024, "A" * 44, [], data]], size=1024, etag=f"e{i}", created=created)


def fill(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(create("v"))
    rep.apply({"op": "set_versioning", "bucket": "v", "status": "Enabled"})
    for i in range(60):
        rep.apply(put(f"k{i:03d}", inline_obj(i) if i % 2 else obj([chunk(f"c{i}", ("n1", "n2"))])))
        rep.apply(put(f"k{i % 5}", inline_obj(i, created=float(i)), bucket="v"))
    rep.apply(delete("k1", bucket="v"))


def rows(db: sqlite3.Connection) -> list[str]:
    return sorted(line for line in db.iterdump() if line.startswith(('INSERT INTO "objects"', 'INSERT INTO "versions"')))


def to_old_format(path: Path) -> None:
    """Rewrite ``objects`` and ``versions`` as an older version wrote them: WITHOUT ROWID
    (and without the chunk index)."""
    db = sqlite3.connect(path, isolation_level=None)
    for module, table in ((objects, "objects"), (versions, "versions")):
        create_sql = next(s for s in module.SCHEMA.split(";") if f"EXISTS {table} (" in s).strip()
        old = create_sql.replace(f"IF NOT EXISTS {table} (", f"{table}_old (") + " WITHOUT ROWID"
        db.execute(old)
        db.execute(f"INSERT INTO {table}_old SELECT * FROM {table}")
        db.execute(f"DROP TABLE {table}")
        db.execute(f"ALTER TABLE {table}_old RENAME TO {table}")
    db.executescript("DROP TABLE chunk_nodes; DROP TABLE chunk_width; DELETE FROM meta WHERE k='chunk_index';")
    db.close()


def test_new_databases_have_rowid_tables_and_inline_rows_stay_on_their_page(tmp_path: Path) -> None:
    rep = Replica(tmp_path / "meta.db")
    rep.apply(create())
    for i in range(1000):
        rep.apply(put(f"k{i:04d}", inline_obj(i)))
    db = rep.state.db
    assert not is_without_rowid(db, "objects") and not is_without_rowid(db, "versions")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # each row on a 4 KiB overflow page of its own would be > 4 MB
    assert os.path.getsize(tmp_path / "meta.db") < 2_500_000
    assert rep.q(q="object", bucket="b", key="k0007")["obj"]["chunks"][0][4] == bytes([7]) * 1024
    rep.state.close()


def test_migrate_rebuilds_without_rowid_tables_the_same_on_every_replica(tmp_path: Path) -> None:
    dumps = []
    for name in ("r1", "r2"):
        path = tmp_path / f"{name}.db"
        rep = Replica(path)
        fill(rep)
        before = rows(rep.state.db)
        rep.state.close()
        to_old_format(path)
        old = sqlite3.connect(path)
        assert is_without_rowid(old, "objects") and is_without_rowid(old, "versions")
        old.close()
        state = MetaState(str(path))
        assert not is_without_rowid(state.db, "objects") and not is_without_rowid(state.db, "versions")
        assert rows(state.db) == before
        indexes = {r[0] for r in state.db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"objects_listing", "versions_null", "versions_stats"} <= indexes
        assert chunkindex.check(state.db) == []
        rowids = state.db.execute("SELECT rowid, bucket, key FROM objects ORDER BY rowid").fetchall()
        assert [r[1:] for r in rowids] == sorted(r[1:] for r in rowids)  # copied in key order
        dumps.append([line for line in state.db.iterdump() if "'applied'" not in line])
        # the replica goes on as before
        state.apply(state.last_applied + 1, put("k1", inline_obj(99), bucket="v", ts=9.0))
        assert state.query({"q": "object", "bucket": "v", "key": "k1"})["obj"]["etag"] == "e99"
        assert len(state.query({"q": "list_versions", "bucket": "v"})["entries"]) == 62
        state.close()
        MetaState(str(path)).close()  # a second migrate changes nothing
    assert dumps[0] == dumps[1]
