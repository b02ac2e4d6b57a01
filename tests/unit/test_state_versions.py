"""Tests of S3 versioning in the state machine (``raftmeta.sm.versions``, ``objects``):
versioning transitions, versions and delete markers, null versions, GC accounting across
versions, ListObjectVersions paging, conditional writes and replay. Helpers:
``tests.unit.metastate``; object lock and lifecycle: ``test_state_lock``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.metastate import Replica, chunk, create, delete, obj, put, replica


@pytest.fixture
def rep(tmp_path: Path) -> Iterator[Replica]:
    yield from replica(tmp_path)


def versioning(rep: Replica, status: str, bucket: str = "b") -> dict[str, Any]:
    return rep.apply({"op": "set_versioning", "bucket": bucket, "status": status})


def enabled(rep: Replica) -> Replica:
    rep.apply(create())
    assert versioning(rep, "Enabled") == {"ok": True}
    return rep


def history(rep: Replica, key: str = "k", **q: Any) -> list[tuple[str, bool, bool]]:
    """(vid, marker, latest) of every version of ``key``, in listing order."""
    page = rep.q(q="list_versions", bucket="b", prefix=key, **q)
    return [(e["vid"], e["marker"], e["latest"]) for e in page["entries"] if e["key"] == key]


def get(rep: Replica, key: str = "k", **q: Any) -> dict[str, Any]:
    return rep.q(q="object", bucket="b", key=key, **q)


# ---------------------------------------------------------------------- versioning transitions


def test_versioning_goes_enabled_suspended_and_back_but_never_unversioned(rep: Replica) -> None:
    rep.apply(create())
    assert get(rep, "none")["err"] == "NoSuchKey"
    for status in ("Enabled", "Suspended", "Enabled", "Suspended"):
        assert versioning(rep, status) == {"ok": True}
        assert rep.q(q="lifecycle_buckets")["buckets"] == []  # nothing else appears
    for bad in ("", "Disabled", "enabled", "Off"):
        r = versioning(rep, bad)
        assert r["ok"] is False and r["err"] == "IllegalVersioningConfigurationException"
    rep.apply(put("k", obj()))
    assert get(rep)["obj"]["vid"] == "null" and get(rep)["versioned"] is True  # still Suspended
    assert versioning(rep, "Enabled", bucket="nope")["err"] == "NoSuchBucket"
    # the guarded setting cannot be written behind the command's back
    r = rep.apply({"op": "set_bucket_config", "bucket": "b", "name": "versioning", "value": None})
    assert r["err"] == "InvalidRequest"
    assert get(rep)["versioned"] is True


def test_suspending_is_refused_with_object_lock(rep: Replica) -> None:
    rep.apply(create(object_lock=True))
    r = versioning(rep, "Suspended")
    assert r["ok"] is False and r["err"] == "InvalidBucketState"
    rep.apply(put("k", obj()))
    assert get(rep)["obj"]["vid"] != "null"  # still Enabled


# ---------------------------------------------------------------------- enabled


def test_each_put_is_a_new_version_with_increasing_ids(rep: Replica) -> None:
    enabled(rep)
    vids = [rep.apply(put("k", obj([chunk(f"c{i}")], etag=f"e{i}")))["vid"] for i in range(5)]
    assert len(set(vids)) == 5 and vids == sorted(vids) and "null" not in vids
    assert get(rep)["obj"]["etag"] == "e4" and get(rep)["obj"]["vid"] == vids[-1]
    for i, vid in enumerate(vids):
        got = get(rep, vid=vid)["obj"]
        assert (got["etag"], got["vid"], got["chunks"][0][0]) == (f"e{i}", vid, f"c{i}")
    assert history(rep) == [(v, False, v == vids[-1]) for v in reversed(vids)]
    assert rep.gc_chunks() == []
    assert rep.q(q="stats")["objects"] == 1


def test_delete_without_vid_adds_a_marker_and_hides_the_key(rep: Replica) -> None:
    enabled(rep)
    v1 = rep.apply(put("k", obj([chunk("a")], etag="e1")))["vid"]
    r = rep.apply(delete("k"))
    assert r["ok"] is True and r["marker"] is True and r["vid"] not in (v1, "null")
    mvid = r["vid"]
    latest = get(rep)
    assert (latest["ok"], latest["err"], latest["marker"], latest["vid"]) == (False, "NoSuchKey", True, mvid)
    named = get(rep, vid=mvid)
    assert (named["err"], named["marker"], named["vid"]) == ("MethodNotAllowed", True, mvid)
    assert get(rep, vid=v1)["obj"]["etag"] == "e1"
    assert history(rep) == [(mvid, True, True), (v1, False, False)]
    assert rep.q(q="list", bucket="b")["contents"] == []
    assert rep.gc_chunks() == []
    # deleting the marker brings the version back, exactly
    r = rep.apply(delete("k", vid=mvid))
    assert r["ok"] is True and r["marker"] is True and r["vid"] == mvid
    back = get(rep)["obj"]
    assert (back["vid"], back["etag"], back["chunks"]) == (v1, "e1", [chunk("a")])
    assert history(rep) == [(v1, False, True)]
    assert [c["key"] for c in rep.q(q="list", bucket="b")["contents"]] == ["k"]


def test_delete_by_vid_current_promotes_previous_noncurrent_just_goes(rep: Replica) -> None:
    enabled(rep)
    v = [rep.apply(put("k", obj([chunk(f"c{i}")], etag=f"e{i}")))["vid"] for i in range(3)]
    assert rep.apply(delete("k", vid=v[2])) == {"ok": True, "existed": True, "vid": v[2]}
    assert get(rep)["obj"]["etag"] == "e1" and get(rep)["obj"]["chunks"] == [chunk("c1")]
    assert rep.gc_chunks() == ["c2"]
    assert rep.apply(delete("k", vid=v[0]))["existed"] is True
    assert history(rep) == [(v[1], False, True)]
    assert get(rep, vid=v[0])["err"] == "NoSuchVersion"
    assert rep.gc_chunks() == ["c2", "c0"]


def test_nonexistent_and_malformed_version_ids(rep: Replica) -> None:
    enabled(rep)
    rep.apply(put("k", obj([chunk("a")])))
    missing = "00000000000fffff"
    assert get(rep, vid=missing)["err"] == "NoSuchVersion"
    assert get(rep, vid="null")["err"] == "NoSuchVersion"
    assert rep.apply(delete("k", vid=missing)) == {"ok": True, "existed": False, "vid": missing}
    for bad in ("xyz", "0000000000000ZZZ", "00", "NULL", ""):
        assert get(rep, vid=bad)["err"] == "InvalidArgument", bad
        assert rep.apply(delete("k", vid=bad))["err"] == "InvalidArgument", bad
    assert get(rep)["obj"]["chunks"] == [chunk("a")] and rep.gc_chunks() == []


# ---------------------------------------------------------------------- suspended and null versions


def test_suspended_put_replaces_only_the_null_version(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj([chunk("n0")], etag="n0")))  # unversioned: the null version
    versioning(rep, "Enabled")
    v1 = rep.apply(put("k", obj([chunk("v1")], etag="v1")))["vid"]
    versioning(rep, "Suspended")
    assert rep.apply(put("k", obj([chunk("n1")], etag="n1"))).get("vid") is None  # S3 names no version id for a Suspended bucket
    assert rep.gc_chunks() == ["n0"]  # the old null version went for good
    assert history(rep) == [("null", False, True), (v1, False, False)]
    assert rep.apply(put("k", obj([chunk("n2")], etag="n2"))).get("vid") is None
    assert rep.gc_chunks() == ["n0", "n1"]
    assert get(rep, vid="null")["obj"]["etag"] == "n2" and get(rep, vid=v1)["obj"]["etag"] == "v1"
    # DELETE: a null marker replaces the null version; v1 stays
    r = rep.apply(delete("k"))
    assert (r["marker"], r["vid"]) == (True, "null")
    assert rep.gc_chunks() == ["n0", "n1", "n2"]
    assert history(rep) == [("null", True, True), (v1, False, False)]
    assert get(rep, vid="null")["err"] == "MethodNotAllowed"
    # and a PUT replaces the null marker
    rep.apply(put("k", obj([chunk("n3")], etag="n3")))
    assert history(rep) == [("null", False, True), (v1, False, False)]


def test_mixed_null_and_versioned_history_in_order(rep: Replica) -> None:
    rep.apply(create())
    versioning(rep, "Enabled")
    a = rep.apply(put("k", obj(etag="a")))["vid"]
    versioning(rep, "Suspended")
    rep.apply(put("k", obj(etag="n")))
    versioning(rep, "Enabled")
    b = rep.apply(put("k", obj(etag="b")))["vid"]
    m = rep.apply(delete("k"))["vid"]
    assert history(rep) == [(m, True, True), (b, False, False), ("null", False, False), (a, False, False)]
    rep.apply(delete("k", vid=m))
    rep.apply(delete("k", vid=b))
    assert get(rep)["obj"]["etag"] == "n" and get(rep)["obj"]["vid"] == "null"


# ---------------------------------------------------------------------- GC accounting


def test_chunks_shared_by_copy_across_versions_are_queued_once_at_the_end(rep: Replica) -> None:
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]):
        r = Replica(rep.path.with_name(f"m{order}.db"))
        enabled(r)
        v0 = r.apply(put("k", obj([chunk("a"), chunk("b")], etag="e0")))["vid"]
        v1 = r.apply(put("k", obj([chunk("c")], etag="e1")))["vid"]
        cp = r.apply({"op": "copy_object", "bucket": "b", "key": "k", "src_bucket": "b", "src_key": "k",
                      "src_vid": v0, "ts": 5.0})
        assert cp["ok"] is True and cp["src_vid"] == v0 and cp["etag"] == "e0"
        assert r.q(q="object", bucket="b", key="k")["obj"]["chunks"] == [chunk("a"), chunk("b")]
        vids = [v0, v1, cp["vid"]]
        for n, i in enumerate(order):
            assert r.apply(delete("k", vid=vids[i], ts=10.0 + n))["existed"] is True
            alive = {c for j in order[n + 1:] for c in ({0: "ab", 1: "c", 2: "ab"}[j])}
            assert set(r.gc_chunks()).isdisjoint(alive), (order, n)
        assert sorted(r.gc_chunks()) == ["a", "b", "c"], order  # each exactly once
        assert r.q(q="chunk_refs")["referenced"] == []
        r.state.close()


def test_chunk_and_node_refs_include_noncurrent_versions_and_markers_hide_nothing(rep: Replica) -> None:
    enabled(rep)
    rep.apply(put("k", obj([chunk("old", ("n1",))])))
    rep.apply(put("k", obj([chunk("new", ("n2",))])))
    rep.apply(delete("k"))
    assert sorted(rep.q(q="chunk_refs")["referenced"]) == ["new", "old"]
    assert rep.q(q="node_refs", node="n1")["ids"] == ["old"]
    assert rep.q(q="node_refs", node="n2")["ids"] == ["new"]


def test_a_put_reusing_chunk_ids_in_a_versioned_bucket_keeps_them_referenced(rep: Replica) -> None:
    """The state machine accepts a manifest reusing chunk ids (``keep``); in a versioned
    bucket both versions then reference them, and removing one must not queue them."""
    enabled(rep)
    v1 = rep.apply(put("k", obj([chunk("a"), chunk("b")])))["vid"]
    rep.apply(put("k", obj([chunk("a"), chunk("c")], etag="v2")))
    rep.apply(delete("k", vid=v1))
    assert "a" in rep.q(q="chunk_refs")["referenced"]
    assert rep.gc_chunks() == ["b"]


# ---------------------------------------------------------------------- ListObjectVersions


def test_paging_a_thousand_versions_of_one_key(rep: Replica) -> None:
    enabled(rep)
    rep.apply(put("a", obj()))
    vids = [rep.apply(put("k", obj(etag=f"e{i}")))["vid"] for i in range(1000)]
    rep.apply(put("z", obj()))
    seen: list[tuple[str, str]] = []
    marker: dict[str, Any] = {}
    pages = 0
    while True:
        page = rep.q(q="list_versions", bucket="b", max_keys=7, **marker)
        pages += 1
        assert len(page["entries"]) <= 7 and page["prefixes"] == []
        seen += [(e["key"], e["vid"]) for e in page["entries"]]
        if not page["truncated"]:
            break
        assert len(page["entries"]) == 7
        marker = {"key_marker": page["next_key"], "vid_marker": page["next_vid"]}
    assert seen == [("a", seen[0][1]), *[("k", v) for v in reversed(vids)], ("z", seen[-1][1])]
    assert pages == -(-1002 // 7)


def test_versions_listing_with_delimiter_across_pages(rep: Replica) -> None:
    enabled(rep)
    for key in ("a/1", "a/2", "b", "c/x/1", "d"):
        rep.apply(put(key, obj()))
        rep.apply(put(key, obj()))
    rep.apply(delete("b"))
    entries: list[tuple[str, bool, bool]] = []
    prefixes: list[str] = []
    marker: dict[str, Any] = {}
    while True:
        page = rep.q(q="list_versions", bucket="b", delimiter="/", max_keys=2, **marker)
        assert len(page["entries"]) + len(page["prefixes"]) <= 2
        entries += [(e["key"], e["marker"], e["latest"]) for e in page["entries"]]
        prefixes += page["prefixes"]
        if not page["truncated"]:
            break
        marker = {"key_marker": page["next_key"], "vid_marker": page["next_vid"]}
    assert prefixes == ["a/", "c/"]
    assert entries == [("b", True, True), ("b", False, False), ("b", False, False), ("d", False, True),
                       ("d", False, False)]
    page = rep.q(q="list_versions", bucket="b", prefix="c/", delimiter="/")
    assert page["prefixes"] == ["c/x/"] and page["entries"] == []


def test_paging_continues_after_the_marker_version_was_deleted(rep: Replica) -> None:
    """The emptying loop of boto3's ``bucket.object_versions.delete()``: list a page,
    delete what it listed, ask for the next page after the last (now deleted) version."""
    enabled(rep)
    for i in range(6):
        rep.apply(put("k", obj(etag=f"e{i}")))
    rep.apply(put("z", obj()))
    remaining = 7
    marker: dict[str, Any] = {}
    while True:
        page = rep.q(q="list_versions", bucket="b", max_keys=3, **marker)
        for e in page["entries"]:
            assert rep.apply(delete(e["key"], vid=e["vid"]))["existed"] is True
            remaining -= 1
        if not page["truncated"]:
            break
        marker = {"key_marker": page["next_key"], "vid_marker": page["next_vid"]}
    assert remaining == 0
    assert rep.apply({"op": "delete_bucket", "bucket": "b", "ts": 9.0}) == {"ok": True}


def test_list_never_shows_keys_whose_latest_is_a_marker(rep: Replica) -> None:
    enabled(rep)
    for key in ("a", "b", "c/1", "d"):
        rep.apply(put(key, obj()))
    rep.apply(delete("b"))
    rep.apply(delete("c/1"))
    rep.apply(delete("never"))  # a marker on a key with no version
    listing = rep.q(q="list", bucket="b", delimiter="/")
    assert [c["key"] for c in listing["contents"]] == ["a", "d"] and listing["prefixes"] == []
    assert rep.q(q="stats")["objects"] == 2
    assert history(rep, "never") == [(history(rep, "never")[0][0], True, True)]


def test_delete_bucket_refused_while_markers_or_noncurrent_versions_remain(rep: Replica) -> None:
    enabled(rep)
    v1 = rep.apply(put("k", obj([chunk("a")])))["vid"]
    m = rep.apply(delete("k"))["vid"]  # now: only a marker and a noncurrent version
    assert rep.apply({"op": "delete_bucket", "bucket": "b", "ts": 5.0})["err"] == "BucketNotEmpty"
    rep.apply(delete("k", vid=v1))  # only the marker
    assert rep.apply({"op": "delete_bucket", "bucket": "b", "ts": 5.0})["err"] == "BucketNotEmpty"
    rep.apply(delete("k", vid=m))
    assert rep.apply({"op": "delete_bucket", "bucket": "b", "ts": 5.0}) == {"ok": True}


# ---------------------------------------------------------------------- conditional writes


def test_conditional_writes_judge_the_latest_version(rep: Replica) -> None:
    enabled(rep)
    rep.apply(put("k", obj(etag="e1")))
    assert rep.apply(put("k", obj(etag="x"), cond={"if_none_match": True}))["err"] == "PreconditionFailed"
    assert rep.apply(put("k", obj(etag="x"), cond={"if_match": ["e0"]}))["err"] == "PreconditionFailed"
    assert rep.apply(put("k", obj(etag="e2"), cond={"if_match": ["e1"]}))["ok"] is True
    rep.apply(delete("k"))  # the latest is a marker: the key counts as absent
    assert rep.apply(put("k", obj(etag="x"), cond={"if_match": ["e2"]}))["err"] == "NoSuchKey"
    assert rep.apply(put("k", obj(etag="x"), cond={"if_match": ["*"]}))["err"] == "NoSuchKey"
    assert rep.apply(put("k", obj(etag="e3"), cond={"if_none_match": True}))["ok"] is True
    assert [e[1] for e in history(rep)] == [False, True, False, False]  # failed writes left nothing


# ---------------------------------------------------------------------- replay


def test_replaying_the_same_entries_gives_an_identical_database(rep: Replica, tmp_path: Path) -> None:
    log: list[dict[str, Any]] = [
        create(), {"op": "set_versioning", "bucket": "b", "status": "Enabled"},
        put("k", obj([chunk("a")])), put("k", obj([chunk("b")]), ts=3.0), delete("k", ts=4.0),
        {"op": "copy_object", "bucket": "b", "key": "c", "src_bucket": "b", "src_key": "k",
         "src_vid": f"{3 * 1024:016x}", "ts": 5.0},
        {"op": "delete_objects", "bucket": "b", "entries": [["k", None], ["c", None], ["k", "bad"]], "ts": 6.0},
        {"op": "set_versioning", "bucket": "b", "status": "Suspended"},
        put("k", obj([chunk("n")]), ts=7.0), delete("c", ts=8.0),
        {"op": "lifecycle_apply", "bucket": "b", "actions": [["k", "noncurrent", 3 * 1024]], "ts": 9.0,
         "cursor": "k", "examined": 2},
    ]
    results = [rep.apply(dict(cmd)) for cmd in log]
    assert results[5]["ok"] is True and results[6]["errors"][0]["code"] == "NoSuchVersion"
    other = Replica(tmp_path / "other.db")
    assert [other.apply(dict(cmd)) for cmd in log] == results
    assert other.dump() == rep.dump()
    other.state.close()
