"""Tests of the state machine's buckets, objects, copies, GC queue, node registry and stats
(``raftmeta.sm``). Helpers: ``tests.unit.metastate``."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.metastate import Replica, chunk, create, delete, obj, put, replica

NO_VERSIONS = {"noncurrent_versions": 0, "noncurrent_bytes": 0, "delete_markers": 0}


@pytest.fixture
def rep(tmp_path: Path) -> Iterator[Replica]:
    yield from replica(tmp_path)


# ---------------------------------------------------------------------- buckets


def test_create_bucket_and_read_it_back(rep: Replica) -> None:
    assert rep.apply({"op": "create_bucket", "bucket": "zed", "owner": "alice", "ts": 5.5}) == {"ok": True}
    assert rep.apply({"op": "create_bucket", "bucket": "abc", "owner": "bob", "ts": 6.5, "acl": "public-read"}) == {
        "ok": True
    }
    assert rep.q(q="bucket", bucket="zed") == {"ok": True, "owner": "alice", "created": 5.5, "acl": "private"}
    assert rep.q(q="bucket", bucket="abc") == {"ok": True, "owner": "bob", "created": 6.5, "acl": "public-read"}
    assert rep.q(q="buckets") == {"ok": True, "buckets": [["abc", 6.5], ["zed", 5.5]]}
    assert rep.q(q="bucket", bucket="nope") == {"ok": False, "err": "NoSuchBucket", "msg": ""}


def test_create_existing_bucket_owned_by_you_vs_someone_else(rep: Replica) -> None:
    rep.apply(create("b", owner="alice"))
    mine = rep.apply(create("b", owner="alice"))
    theirs = rep.apply(create("b", owner="bob"))
    assert mine == {"ok": False, "err": "BucketAlreadyOwnedByYou", "msg": ""}
    assert theirs == {"ok": False, "err": "BucketAlreadyExists", "msg": ""}
    assert rep.q(q="bucket", bucket="b")["owner"] == "alice"
    assert rep.q(q="stats")["buckets"] == 1


def test_us_east_1_recreating_your_own_bucket_succeeds_and_resets_its_acl(rep: Replica) -> None:
    rep.apply(create("b", owner="alice", acl="public-read"))
    assert rep.apply(create("b", owner="alice", legacy_recreate=True)) == {"ok": True, "recreated": True}
    assert rep.q(q="bucket", bucket="b")["acl"] == "private"
    assert rep.apply(create("b", owner="bob", legacy_recreate=True))["err"] == "BucketAlreadyExists"
    # asking for object lock on an existing bucket is never a re-creation
    assert rep.apply(create("b", owner="alice", legacy_recreate=True, object_lock=True))["err"] == \
        "BucketAlreadyOwnedByYou"


def test_delete_bucket(rep: Replica) -> None:
    assert rep.apply({"op": "delete_bucket", "bucket": "b"})["err"] == "NoSuchBucket"
    rep.apply(create("b"))
    rep.apply(put("k", obj()))
    assert rep.apply({"op": "delete_bucket", "bucket": "b"})["err"] == "BucketNotEmpty"
    assert rep.q(q="bucket", bucket="b")["ok"] is True
    rep.apply(delete("k"))
    assert rep.apply({"op": "delete_bucket", "bucket": "b"}) == {"ok": True}
    assert rep.q(q="bucket", bucket="b")["err"] == "NoSuchBucket"
    assert rep.q(q="buckets")["buckets"] == []
    # the name is free again, for anyone
    assert rep.apply(create("b", owner="bob")) == {"ok": True}
    assert rep.q(q="bucket", bucket="b")["owner"] == "bob"


def test_bucket_not_empty_only_counts_its_own_objects(rep: Replica) -> None:
    rep.apply(create("a"))
    rep.apply(create("ab"))
    rep.apply(put("k", obj(), bucket="ab"))
    assert rep.apply({"op": "delete_bucket", "bucket": "a"}) == {"ok": True}


# ---------------------------------------------------------------------- objects


def test_put_object_version_is_the_raft_index_and_fields_round_trip(rep: Replica) -> None:
    rep.apply(create())
    meta = {"user": {"colour": "blue"}, "headers": {"cache-control": "no-cache"}, "checksum": {"crc32": "AAAA"}}
    o = obj([chunk("c1", ("n1", "n2", "n3")), chunk("c2")], size=12345, etag="e1", created=42.5, meta=meta)
    assert rep.state.apply(17, put("dir/key é", o, ts=99.0)) == {"ok": True, "version": 17}
    got = rep.q(q="object", bucket="b", key="dir/key é")
    assert got == {
        "ok": True,
        "obj": {
            "key": "dir/key é", "size": 12345, "etag": "e1", "sha256": "sha-e1", "content_type": "text/plain",
            "created": 42.5, "version": 17, "meta": meta, "chunks": o["chunks"],
        },
        "versioned": False,
    }


def test_version_cannot_be_forged_by_the_command(rep: Replica) -> None:
    rep.apply(create())
    assert rep.state.apply(9, {**put("k", obj()), "index": 1}) == {"ok": True, "version": 9}
    assert rep.q(q="object", bucket="b", key="k")["obj"]["version"] == 9


def test_put_replaces_and_queues_only_chunks_the_new_version_drops(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj([chunk("a", ("n1",)), chunk("b", ("n2",)), chunk("c", ("n3", "n4"))], size=300)))
    r = rep.apply(put("k", obj([chunk("b", ("n2",)), chunk("d", ("n5",))], size=200, etag="v2"), ts=50.0))
    assert r == {"ok": True, "version": 3}
    o = rep.q(q="object", bucket="b", key="k")["obj"]
    assert (o["size"], o["etag"], o["version"]) == (200, "v2", 3)
    assert [c[0] for c in o["chunks"]] == ["b", "d"]
    pending = rep.q(q="gc_pending", before=50.0)
    # the dropped chunks, with the nodes that hold them, queued at the command's ts
    assert [[i[1], i[2]] for i in pending["items"]] == [["a", ["n1"]], ["c", ["n3", "n4"]]]
    assert rep.q(q="gc_pending", before=49.9)["items"] == []
    assert rep.q(q="stats") == {"ok": True, "buckets": 1, "objects": 1, "bytes": 200, "gc_queue": 2, **NO_VERSIONS}
    refs = rep.q(q="chunk_refs")
    assert sorted(refs["referenced"]) == ["b", "d"]
    assert set(refs["referenced"]).isdisjoint(refs["gc"])


def test_put_with_same_chunks_queues_nothing(rep: Replica) -> None:
    rep.apply(create())
    chunks = [chunk("a"), chunk("b")]
    rep.apply(put("k", obj(chunks)))
    rep.apply(put("k", obj(chunks, etag="again")))
    assert rep.gc_chunks() == []
    assert rep.q(q="object", bucket="b", key="k")["obj"]["etag"] == "again"


def test_same_key_in_two_buckets_is_independent(rep: Replica) -> None:
    rep.apply(create("b1"))
    rep.apply(create("b2"))
    rep.apply(put("k", obj([chunk("x")]), bucket="b1"))
    rep.apply(put("k", obj([chunk("y")]), bucket="b2"))
    rep.apply(delete("k", bucket="b1"))
    assert rep.gc_chunks() == ["x"]
    assert rep.q(q="object", bucket="b2", key="k")["obj"]["chunks"][0][0] == "y"
    assert rep.q(q="object", bucket="b1", key="k")["err"] == "NoSuchKey"


def test_delete_object_queues_all_its_chunks(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj([chunk("a", ("n1",)), chunk("b", ("n2", "n3"))])))
    assert rep.apply(delete("k", ts=77.0)) == {"ok": True, "existed": True}
    items = rep.q(q="gc_pending", before=77.0)["items"]
    assert [[i[1], i[2]] for i in items] == [["a", ["n1"]], ["b", ["n2", "n3"]]]
    assert rep.q(q="object", bucket="b", key="k") == {"ok": False, "err": "NoSuchKey", "msg": ""}
    assert rep.q(q="stats")["objects"] == 0


def test_delete_missing_key_is_ok_and_queues_nothing(rep: Replica) -> None:
    rep.apply(create())
    assert rep.apply(delete("never")) == {"ok": True, "existed": False}
    rep.apply(put("k", obj([chunk("a")])))
    rep.apply(delete("k"))
    assert rep.apply(delete("k")) == {"ok": True, "existed": False}
    assert rep.gc_chunks() == ["a"]  # queued exactly once


def test_missing_bucket(rep: Replica) -> None:
    assert rep.apply(put("k", obj([chunk("a")]), bucket="nope"))["err"] == "NoSuchBucket"
    assert rep.apply(delete("k", bucket="nope"))["err"] == "NoSuchBucket"
    assert rep.q(q="object", bucket="nope", key="k")["err"] == "NoSuchBucket"
    assert rep.q(q="list", bucket="nope")["err"] == "NoSuchBucket"
    assert rep.gc_chunks() == []
    assert rep.q(q="stats") == {"ok": True, "buckets": 0, "objects": 0, "bytes": 0, "gc_queue": 0, **NO_VERSIONS}


def test_keys_are_stored_exactly(rep: Replica) -> None:
    rep.apply(create())
    keys = ["a/../b", "a/b", "a//b", "./a", "a/", "A", "a", " a", "é", "e\u0301", "\U0001f600", "a\x00b"]
    for i, k in enumerate(keys):
        rep.apply(put(k, obj(size=i)))
    for i, k in enumerate(keys):
        assert rep.q(q="object", bucket="b", key=k)["obj"]["size"] == i
    listed = [c["key"] for c in rep.q(q="list", bucket="b")["contents"]]
    assert listed == sorted(keys)


def test_discard_chunks_queues_them(rep: Replica) -> None:
    assert rep.apply({"op": "discard_chunks", "chunks": [chunk("o1", ("n1",)), chunk("o2", ("n2",))], "ts": 4.0}) == {
        "ok": True
    }
    assert [[i[1], i[2]] for i in rep.q(q="gc_pending", before=4.0)["items"]] == [["o1", ["n1"]], ["o2", ["n2"]]]


# ---------------------------------------------------------------------- gc queue, nodes, stats


def test_gc_pending_before_and_limit_and_gc_done(rep: Replica) -> None:
    for ts, ids in ((10.0, ["a", "b"]), (20.0, ["c"]), (30.0, ["d"])):
        rep.apply({"op": "discard_chunks", "chunks": [chunk(i) for i in ids], "ts": ts})
    everything = rep.q(q="gc_pending", before=100.0)
    assert [i[1] for i in everything["items"]] == ["a", "b", "c", "d"]
    seqs = [i[0] for i in everything["items"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4

    assert rep.q(q="gc_pending", before=9.99) == {"ok": True, "items": [], "total": 4}
    r = rep.q(q="gc_pending", before=20.0)  # inclusive
    assert [i[1] for i in r["items"]] == ["a", "b", "c"] and r["total"] == 4
    r = rep.q(q="gc_pending", before=100.0, limit=2)
    assert [i[1] for i in r["items"]] == ["a", "b"] and r["total"] == 4
    assert r["items"][0][2] == ["n1", "n2"]

    assert rep.apply({"op": "gc_done", "seqs": seqs[:2]}) == {"ok": True}
    r = rep.q(q="gc_pending", before=100.0)
    assert [i[1] for i in r["items"]] == ["c", "d"] and r["total"] == 2
    # done again, or unknown seqs: harmless
    assert rep.apply({"op": "gc_done", "seqs": [*seqs[:2], 999_999]}) == {"ok": True}
    assert rep.q(q="gc_pending", before=100.0)["total"] == 2
    assert rep.q(q="stats")["gc_queue"] == 2


def test_node_heartbeat_upserts(rep: Replica) -> None:
    hb = {"op": "node_heartbeat", "node_id": "n2", "addr": "10.0.0.2:9000", "capacity": 1000, "used": 10, "ts": 5.0}
    assert rep.apply(hb) == {"ok": True}
    rep.apply({**hb, "node_id": "n1", "addr": "10.0.0.1:9000", "chunks": 3})
    assert rep.q(q="nodes")["nodes"] == [
        {"node_id": "n1", "addr": "10.0.0.1:9000", "capacity": 1000, "used": 10, "chunks": 3, "heartbeat": 5.0,
         "state": "active"},
        {"node_id": "n2", "addr": "10.0.0.2:9000", "capacity": 1000, "used": 10, "chunks": 0, "heartbeat": 5.0,
         "state": "active"},
    ]
    rep.apply({**hb, "addr": "10.0.0.9:9001", "capacity": 2000, "used": 500, "chunks": 7, "ts": 9.0})
    nodes = {n["node_id"]: n for n in rep.q(q="nodes")["nodes"]}
    assert len(nodes) == 2
    assert nodes["n2"] == {"node_id": "n2", "addr": "10.0.0.9:9001", "capacity": 2000, "used": 500, "chunks": 7,
                           "heartbeat": 9.0, "state": "active"}
    # registration time is the first heartbeat's
    with sqlite3.connect(rep.path) as db:
        assert db.execute("SELECT registered FROM nodes WHERE node_id='n2'").fetchone() == (5.0,)


def test_stats(rep: Replica) -> None:
    assert rep.q(q="stats") == {"ok": True, "buckets": 0, "objects": 0, "bytes": 0, "gc_queue": 0, **NO_VERSIONS}
    rep.apply(create("b"))
    rep.apply(create("c"))
    rep.apply(put("k1", obj([chunk("a")], size=10)))
    rep.apply(put("k2", obj([chunk("b")], size=32), bucket="c"))
    rep.apply(put("k1", obj([chunk("d")], size=11)))
    assert rep.q(q="stats") == {"ok": True, "buckets": 2, "objects": 2, "bytes": 43, "gc_queue": 1, **NO_VERSIONS}


def test_unknown_query(rep: Replica) -> None:
    r = rep.q(q="everything")
    assert r["ok"] is False and r["err"] == "BadRequest"


def test_copy_shares_chunks_and_counts_references(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("src", obj([chunk("c1"), chunk("c2")])))
    copy = {"op": "copy_object", "src_bucket": "b", "src_key": "src", "bucket": "b", "key": "dst", "ts": 2.0}
    assert rep.apply(copy)["ok"] is True
    assert rep.apply({**copy, "key": "dst2"})["ok"] is True
    assert rep.gc_chunks() == []
    rep.apply(delete("src"))
    rep.apply(delete("dst"))
    assert rep.gc_chunks() == []  # dst2 still holds them
    rep.apply(delete("dst2"))
    assert sorted(rep.gc_chunks()) == ["c1", "c2"]


def test_copy_onto_itself_keeps_one_reference(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj([chunk("c1")])))
    copy = {"op": "copy_object", "src_bucket": "b", "src_key": "k", "bucket": "b", "key": "k", "ts": 2.0,
            "meta": {"user": {"new": "meta"}}}
    assert rep.apply(copy)["ok"] is True
    assert rep.gc_chunks() == []
    rep.apply(delete("k"))
    assert rep.gc_chunks() == ["c1"]


def test_copy_checks_source_etag_atomically(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj([chunk("c1")])))
    copy = {"op": "copy_object", "src_bucket": "b", "src_key": "k", "bucket": "b", "key": "d", "ts": 2.0,
            "source_etag": "not-the-etag"}
    assert rep.apply(copy)["err"] == "PreconditionFailed"
    assert rep.apply({**copy, "src_key": "missing", "source_etag": None})["err"] == "NoSuchKey"
