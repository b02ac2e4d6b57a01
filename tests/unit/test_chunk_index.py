"""Tests of the chunk index (``raftmeta.sm.chunkindex``): every writer of a manifest keeps
it equal to what a scan of every manifest yields (a property test over random command
sequences), a database from before the index gets it built by ``migrate``, and the
queries that use it (``repair_scan``, ``node_refs``, ``replicas_lost``, decommission)
answer what the full scans they replace answered. Helpers: ``tests.unit.metastate``."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftmeta.sm import chunkindex
from raftmeta.sm.tables import unpackb
from raftmeta.state import MetaState
from tests.unit.metastate import Replica, chunk, create, delete, obj, put, replica

NODES = ("n1", "n2", "n3", "n4")
BUCKETS = ("b", "c")
KEYS = ("k1", "k2", "k3")
PART = 5 * 1024 * 1024


@pytest.fixture
def rep(tmp_path: Path) -> Iterator[Replica]:
    yield from replica(tmp_path)


def consistent(rep: Replica) -> None:
    assert chunkindex.check(rep.state.db) == []


# ---------------------------------------------------------------------- the scans the index replaces


def reference_repair_scan(db: sqlite3.Connection, alive: set[str], want: int) -> set[tuple[Any, ...]]:
    """What ``repair_scan`` answered before the index (a scan of every manifest), as a set
    (one item per chunk of a version; a manifest names a chunk id once)."""
    out: set[tuple[Any, ...]] = set()
    for table, seq in (("objects", "version"), ("versions", "seq")):
        for b, k, s, chunks in db.execute(f"SELECT bucket, key, {seq}, chunks FROM {table}"):
            for c in unpackb(chunks):
                if len(c) <= 4 and len(alive.intersection(c[3])) < want:
                    out.add((b, k, s, c[0], c[1], c[2], tuple(c[3])))
    return out


def reference_node_refs(db: sqlite3.Connection, node: str) -> list[str]:
    ids: set[str] = set()
    for table in ("objects", "versions", "parts"):
        for (chunks,) in db.execute(f"SELECT chunks FROM {table}"):
            ids.update(c[0] for c in unpackb(chunks) if node in c[3] and len(c) <= 4)
    return sorted(ids)


def paged_repair_scan(rep: Replica, alive: list[str], want: int, limit: int, scan: int) -> list[tuple[Any, ...]]:
    items: list[tuple[Any, ...]] = []
    cursor: list[Any] = ["", ""]
    for _ in range(10_000):
        page = rep.q(q="repair_scan", alive=alive, want=want, after=cursor, limit=limit, scan=scan)
        assert page["ok"], page
        items += [(*i[:6], tuple(i[6])) for i in page["items"]]
        if page["done"]:
            return items
        cursor = page["next"]
    raise AssertionError("repair_scan never finished")


def paged_node_refs(rep: Replica, node: str, limit: int) -> list[str]:
    ids: list[str] = []
    after, more = "", True
    while more:
        page = rep.q(q="node_refs", node=node, after=after, limit=limit)
        ids += page["ids"]
        more = page["more"]
        if page["ids"]:
            after = page["ids"][-1]
    return ids


def same_answers(rep: Replica) -> None:
    """The index is the scan, and every query built on it answers as the scan did."""
    db = rep.state.db
    consistent(rep)
    for node in (*NODES, "n9"):
        assert rep.q(q="node_refs", node=node)["ids"] == reference_node_refs(db, node)
        assert paged_node_refs(rep, node, 2) == reference_node_refs(db, node)
        assert chunkindex.holds_any(db, node) == bool(reference_node_refs(db, node))
    for alive, want in ((list(NODES), 2), (["n1", "n2"], 2), (["n3"], 1), ([], 1), (["n1", "n3", "n4"], 3)):
        expected = reference_repair_scan(db, set(alive), want)
        for limit, scan in ((1000, 2000), (1, 1), (2, 3)):
            got = paged_repair_scan(rep, alive, want, limit, scan)
            assert len(got) == len(set(got)), "an item reported twice"
            assert set(got) == expected, (alive, want, limit, scan)


# ---------------------------------------------------------------------- random command sequences


class Driver:
    """Draws commands touching every writer of a manifest, against a live replica."""

    def __init__(self, rep: Replica, data: st.DataObject) -> None:
        self.rep, self.data = rep, data
        self.next_chunk = 0
        self.uploads: list[tuple[str, str, str]] = []
        self.ts = 10.0

    def draw(self, strategy: st.SearchStrategy[Any]) -> Any:
        return self.data.draw(strategy)

    def chunks(self) -> list[list[Any]]:
        """A manifest of fresh chunk ids, or ids of earlier manifests (``keep``), each once."""
        out: list[list[Any]] = []
        for _ in range(self.draw(st.integers(0, 3))):
            known = self.next_chunk
            cid = f"c{self.draw(st.integers(0, known - 1))}" if known and self.draw(st.integers(0, 4)) == 0 else ""
            if not cid or any(c[0] == cid for c in out):
                cid, self.next_chunk = f"c{known}", known + 1
            if self.draw(st.integers(0, 5)) == 0:
                out.append([cid, 10, f"sha-{cid}", [], b"inline"])
            else:
                nodes = self.draw(st.lists(st.sampled_from(NODES), max_size=3, unique=True))
                out.append(chunk(cid, tuple(nodes)))
        return out

    def versions(self) -> list[tuple[str, str, int]]:
        return self.rep.state.db.execute(
            "SELECT bucket, key, version FROM objects UNION ALL SELECT bucket, key, seq FROM versions "
            "ORDER BY 1, 2, 3").fetchall()

    def chunk_of(self, bucket: str, key: str, seq: int) -> str | None:
        db = self.rep.state.db
        row = db.execute("SELECT chunks FROM objects WHERE bucket=? AND key=? AND version=? UNION ALL "
                         "SELECT chunks FROM versions WHERE bucket=? AND key=? AND seq=?",
                         (bucket, key, seq, bucket, key, seq)).fetchone()
        chunks = unpackb(row[0]) if row else []
        return self.draw(st.sampled_from(chunks))[0] if chunks else None

    def step(self) -> None:
        self.ts += 1.0
        op = self.draw(st.sampled_from((
            "put", "put", "copy", "delete", "delete_version", "delete_objects", "versioning", "upload", "part", "part", "part",
            "complete", "abort", "expire", "set_replicas", "drop_replica", "lost", "delete_bucket", "create")))
        bucket, key = self.draw(st.sampled_from(BUCKETS)), self.draw(st.sampled_from(KEYS))
        getattr(self, f"op_{op}")(bucket, key)

    def apply(self, cmd: dict[str, Any]) -> dict[str, Any]:
        result = self.rep.apply({"ts": self.ts, **cmd})
        assert result.get("err") != "Internal", (cmd, result)
        return result

    def op_create(self, bucket: str, key: str) -> None:
        self.apply(create(bucket))

    def op_put(self, bucket: str, key: str) -> None:
        self.apply(put(key, obj(self.chunks()), bucket=bucket))

    def op_copy(self, bucket: str, key: str) -> None:
        src = self.draw(st.sampled_from(KEYS))
        self.apply({"op": "copy_object", "bucket": bucket, "key": key, "src_bucket": self.draw(st.sampled_from(BUCKETS)),
                    "src_key": src})

    def op_delete(self, bucket: str, key: str) -> None:
        self.apply(delete(key, bucket=bucket))

    def op_delete_version(self, bucket: str, key: str) -> None:
        versions = self.versions()
        if versions:
            b, k, seq = self.draw(st.sampled_from(versions))
            null = self.rep.state.db.execute(
                "SELECT null_id FROM objects WHERE bucket=? AND key=? AND version=? UNION ALL "
                "SELECT null_id FROM versions WHERE bucket=? AND key=? AND seq=?", (b, k, seq, b, k, seq)).fetchone()
            self.apply(delete(k, bucket=b, vid="null" if null[0] else f"{seq:016x}"))

    def op_delete_objects(self, bucket: str, key: str) -> None:
        self.apply({"op": "delete_objects", "bucket": bucket, "entries": [[k, None] for k in KEYS[:2]]})

    def op_versioning(self, bucket: str, key: str) -> None:
        self.apply({"op": "set_versioning", "bucket": bucket, "status": self.draw(st.sampled_from(("Enabled", "Suspended")))})

    def op_upload(self, bucket: str, key: str) -> None:
        upload_id = f"u{len(self.uploads)}"
        if self.apply({"op": "create_upload", "bucket": bucket, "key": key, "upload_id": upload_id}).get("ok"):
            self.uploads.append((upload_id, bucket, key))

    def _upload(self) -> tuple[str, str, str] | None:
        live = self.rep.state.db.execute("SELECT upload_id, bucket, key FROM uploads ORDER BY 1").fetchall()
        return self.draw(st.sampled_from(live)) if live else None

    def op_part(self, bucket: str, key: str) -> None:
        if (up := self._upload()) is not None:
            number = self.draw(st.integers(1, 3))
            self.apply({"op": "put_part", "upload_id": up[0], "bucket": up[1], "key": up[2], "number": number,
                        "part": {"size": PART, "etag": f"e{number}", "chunks": self.chunks()}})

    def op_complete(self, bucket: str, key: str) -> None:
        if (up := self._upload()) is not None:
            stored = [r[0] for r in self.rep.state.db.execute(
                "SELECT number FROM parts WHERE upload_id=? ORDER BY number", (up[0],))]
            if not stored:
                return
            numbers = sorted(self.draw(st.sets(st.sampled_from(stored), min_size=1)))
            self.apply({"op": "complete_upload", "upload_id": up[0], "bucket": up[1], "key": up[2],
                        "parts": [[n, f"e{n}"] for n in numbers], "obj": obj()})

    def op_abort(self, bucket: str, key: str) -> None:
        if (up := self._upload()) is not None:
            self.apply({"op": "abort_upload", "upload_id": up[0]})

    def op_expire(self, bucket: str, key: str) -> None:
        self.apply({"op": "expire_uploads", "before": self.ts - self.draw(st.sampled_from((5.0, 1000.0)))})

    def _version(self) -> tuple[str, str, int, str] | None:
        versions = self.versions()
        if not versions:
            return None
        b, k, seq = self.draw(st.sampled_from(versions))
        cid = self.chunk_of(b, k, seq)
        return None if cid is None else (b, k, seq, cid)

    def op_set_replicas(self, bucket: str, key: str) -> None:
        if (v := self._version()) is not None:
            nodes = self.draw(st.lists(st.sampled_from(NODES), min_size=1, max_size=4, unique=True))
            self.apply({"op": "set_replicas", "bucket": v[0], "key": v[1], "version": v[2], "chunk": v[3],
                        "nodes": nodes})

    def op_drop_replica(self, bucket: str, key: str) -> None:
        if (v := self._version()) is not None:
            self.apply({"op": "drop_replica", "bucket": v[0], "key": v[1], "version": v[2], "chunk": v[3],
                        "node": self.draw(st.sampled_from(NODES))})

    def op_lost(self, bucket: str, key: str) -> None:
        if self.next_chunk:
            ids = self.draw(st.lists(st.integers(0, self.next_chunk - 1), min_size=1, max_size=4))
            self.apply({"op": "replicas_lost", "node": self.draw(st.sampled_from(NODES)),
                        "chunks": [f"c{i}" for i in ids]})

    def op_delete_bucket(self, bucket: str, key: str) -> None:
        self.apply({"op": "delete_bucket", "bucket": bucket})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_every_writer_keeps_the_index_equal_to_a_scan_of_the_manifests(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rep = Replica(Path(tmp) / "meta.db")
        try:
            for bucket in BUCKETS:
                rep.apply(create(bucket))
            driver = Driver(rep, data)
            for _ in range(data.draw(st.integers(1, 40))):
                driver.step()
                consistent(rep)
            same_answers(rep)
        finally:
            rep.state.close()


# ---------------------------------------------------------------------- writers, one by one


def test_a_version_moving_between_tables_keeps_its_rows(rep: Replica) -> None:
    rep.apply(create())
    rep.apply({"op": "set_versioning", "bucket": "b", "status": "Enabled"})
    v1 = rep.apply(put("k", obj([chunk("a", ("n1", "n2"))])))
    rows = set(rep.state.db.execute("SELECT * FROM chunk_nodes"))
    rep.apply(put("k", obj([chunk("b", ("n3",))])))  # v1 becomes noncurrent
    assert rows <= set(rep.state.db.execute("SELECT * FROM chunk_nodes"))
    rep.apply(delete("k", vid=f"{rep.q(q='object', bucket='b', key='k')['obj']['version']:016x}"))  # v1 promoted
    assert set(rep.state.db.execute("SELECT * FROM chunk_nodes")) == rows
    assert rows == {("n1", "a", 0, "b", "k", v1["version"]), ("n2", "a", 0, "b", "k", v1["version"])}
    consistent(rep)


def test_copies_share_chunks_and_each_reference_is_indexed(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("src", obj([chunk("a", ("n1",))])))
    rep.apply({"op": "copy_object", "bucket": "b", "key": "dst", "src_bucket": "b", "src_key": "src", "ts": 3.0})
    assert [r[1:3] for r in chunkindex.refs_of(rep.state.db, "n1", "a")] == [("b", "dst"), ("b", "src")]
    rep.apply(delete("src"))
    assert [r[2] for r in chunkindex.refs_of(rep.state.db, "n1", "a")] == ["dst"]
    consistent(rep)


def test_parts_are_indexed_until_complete_or_abort(rep: Replica) -> None:
    rep.apply(create())
    for upload_id in ("u1", "u2"):
        rep.apply({"op": "create_upload", "bucket": "b", "key": "k", "upload_id": upload_id, "ts": 2.0})
        rep.apply({"op": "put_part", "upload_id": upload_id, "bucket": "b", "key": "k", "number": 1, "ts": 3.0,
                   "part": {"size": PART, "etag": "e", "chunks": [chunk(f"{upload_id}-p1", ("n4",))]}})
    assert rep.q(q="node_refs", node="n4")["ids"] == ["u1-p1", "u2-p1"]
    rep.apply({"op": "complete_upload", "upload_id": "u1", "bucket": "b", "key": "k", "parts": [[1, "e"]],
               "obj": obj(), "ts": 4.0})
    rep.apply({"op": "abort_upload", "upload_id": "u2", "ts": 5.0})
    assert rep.q(q="node_refs", node="n4")["ids"] == ["u1-p1"]  # now the object's
    assert chunkindex.refs_of(rep.state.db, "n4", "u1-p1")[0][0] == chunkindex.KIND_VERSION
    consistent(rep)


def test_replicas_lost_reaches_versions_and_parts_by_the_index_and_never_drops_the_last(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj([chunk("a", ("n1", "n2")), chunk("z", ("n1",))])))
    rep.apply({"op": "create_upload", "bucket": "b", "key": "u", "upload_id": "u1", "ts": 2.0})
    rep.apply({"op": "put_part", "upload_id": "u1", "bucket": "b", "key": "u", "number": 1, "ts": 3.0,
               "part": {"size": PART, "etag": "e", "chunks": [chunk("p", ("n1", "n3"))]}})
    result = rep.apply({"op": "replicas_lost", "node": "n1", "chunks": ["a", "p", "z", "nope"], "ts": 4.0})
    assert result == {"ok": True, "objects": 1, "parts": 1}
    assert rep.q(q="node_refs", node="n1")["ids"] == ["z"]  # the last replica stays
    assert rep.apply({"op": "replicas_lost", "node": "n1", "chunks": ["a"], "ts": 5.0})["objects"] == 0
    consistent(rep)


def test_decommission_is_refused_while_the_index_places_a_chunk_on_the_node(rep: Replica) -> None:
    rep.apply(create())
    for node in ("n1", "n2"):
        rep.apply({"op": "node_heartbeat", "node_id": node, "addr": "x", "capacity": 1, "used": 0, "ts": 1.0})
    rep.apply(put("k", obj([chunk("a", ("n1",))])))
    assert rep.apply({"op": "set_node_state", "node_id": "n1", "state": "removed"})["err"] == "NodeNotEmpty"
    assert rep.apply({"op": "set_node_state", "node_id": "n2", "state": "removed"})["ok"] is True
    rep.apply(delete("k"))
    assert rep.apply({"op": "set_node_state", "node_id": "n1", "state": "removed"})["ok"] is True


# ---------------------------------------------------------------------- repair_scan


def test_repair_scan_finds_narrow_chunks_and_chunks_on_uncounted_nodes_once(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("narrow", obj([chunk("a", ("n1",))])))
    rep.apply(put("dead", obj([chunk("b", ("n1", "n3", "n4"))])))  # two uncounted nodes: reported once
    rep.apply(put("wide", obj([chunk("c", ("n1", "n2", "n3"))])))  # n3 uncounted, still 2 counted
    rep.apply(put("fine", obj([chunk("d", ("n1", "n2"))])))
    rep.apply(put("inline", obj([["i", 3, "sha", [], b"abc"]])))
    got = paged_repair_scan(rep, ["n1", "n2"], 2, 1, 1)
    assert sorted(i[3] for i in got) == ["a", "b"]
    assert paged_repair_scan(rep, ["n1", "n2"], 2, 1000, 2000) == got
    same_answers(rep)


def test_a_cursor_from_the_old_scan_starts_over(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj([chunk("a", ("n1",))])))
    page = rep.q(q="repair_scan", alive=["n1"], want=2, after=["b", "k", 5])
    assert page["done"] and [i[3] for i in page["items"]] == ["a"]


# ---------------------------------------------------------------------- migration


def old_format(path: Path) -> None:
    """Make the database at ``path`` look as a version before the index wrote it."""
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE chunk_nodes; DROP TABLE chunk_width; DELETE FROM meta WHERE k='chunk_index';")
    db.commit()
    db.close()


def populate(rep: Replica) -> None:
    rep.apply(create())
    rep.apply({"op": "set_versioning", "bucket": "b", "status": "Enabled"})
    for i in range(20):
        rep.apply(put(f"k{i % 7}", obj([chunk(f"c{i}", NODES[: 1 + i % 3]), chunk(f"d{i}", ("n4",))])))
    rep.apply({"op": "create_upload", "bucket": "b", "key": "u", "upload_id": "u1", "ts": 2.0})
    rep.apply({"op": "put_part", "upload_id": "u1", "bucket": "b", "key": "u", "number": 1, "ts": 3.0,
               "part": {"size": PART, "etag": "e", "chunks": [chunk("p", ("n2",))]}})


def test_migrate_builds_the_index_of_an_old_database_once_and_the_same_on_every_replica(tmp_path: Path) -> None:
    dumps = []
    for name in ("r1", "r2"):
        rep = Replica(tmp_path / f"{name}.db")
        populate(rep)
        before = set(rep.state.db.execute("SELECT * FROM chunk_nodes")), set(rep.state.db.execute("SELECT * FROM chunk_width"))
        rep.state.close()
        old_format(tmp_path / f"{name}.db")
        state = MetaState(str(tmp_path / f"{name}.db"))
        assert chunkindex.check(state.db) == []
        assert (set(state.db.execute("SELECT * FROM chunk_nodes")), set(state.db.execute("SELECT * FROM chunk_width"))) == before
        assert state.db.execute("SELECT v FROM meta WHERE k='chunk_index'").fetchone() == (chunkindex.INDEX_FORMAT,)
        dumps.append([line for line in state.db.iterdump() if "'applied'" not in line])
        state.close()
    assert dumps[0] == dumps[1]


def test_migrate_leaves_a_built_index_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rep = Replica(tmp_path / "meta.db")
    populate(rep)
    rep.state.close()

    def no_rebuild(db: sqlite3.Connection) -> None:
        raise AssertionError("rebuilt an index that was complete")

    monkeypatch.setattr(chunkindex, "rebuild", no_rebuild)
    MetaState(str(tmp_path / "meta.db")).close()


def test_the_audit_query_reports_a_broken_index(rep: Replica) -> None:
    populate(rep)
    assert rep.q(q="chunk_index_check") == {"ok": True, "consistent": True, "problems": []}
    rep.state.db.execute("DELETE FROM chunk_nodes WHERE chunk='p'")
    rep.state.db.execute("INSERT INTO chunk_width VALUES (1, 'b', 'zz', 1, 'x')")
    report = rep.q(q="chunk_index_check")
    assert report["consistent"] is False and len(report["problems"]) == 2
