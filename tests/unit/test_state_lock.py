"""Tests of object lock (``raftmeta.sm.objectlock``, the lock commands of ``versions``)
and of lifecycle's one command (``raftmeta.sm.lifecycle``) in the state machine.
Helpers: ``tests.unit.metastate``; versioning itself: ``test_state_versions``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftmeta.sm.objectlock import DAY
from tests.unit.metastate import Replica, chunk, create, delete, obj, put, replica


@pytest.fixture
def rep(tmp_path: Path) -> Iterator[Replica]:
    yield from replica(tmp_path)


def lock_config(rep: Replica, bucket: str = "b", **config: Any) -> dict[str, Any]:
    return rep.apply({"op": "set_object_lock", "bucket": bucket, "config": {"enabled": True, **config}})


def locked_put(rep: Replica, key: str, mode: str | None = None, until: float = 0.0, hold: bool = False,
               cid: str = "c", ts: float = 2.0) -> str:
    meta: dict[str, Any] = {}
    if mode:
        meta["retention"] = [mode, until]
    if hold:
        meta["hold"] = True
    r = rep.apply(put(key, obj([chunk(cid)], meta=meta), ts=ts))
    assert r["ok"] is True, r
    return r["vid"]


def meta(rep: Replica, key: str, vid: str | None = None) -> dict[str, Any]:
    return rep.q(q="object", bucket="b", key=key, vid=vid)["obj"]["meta"]


def retention(rep: Replica, key: str, vid: str, new: list[Any] | None, ts: float = 10.0,
              **extra: Any) -> dict[str, Any]:
    return rep.apply({"op": "set_retention", "bucket": "b", "key": key, "vid": vid, "retention": new, "ts": ts,
                      **extra})


def hold(rep: Replica, key: str, vid: str, on: bool) -> dict[str, Any]:
    return rep.apply({"op": "set_legal_hold", "bucket": "b", "key": key, "vid": vid, "hold": on, "ts": 10.0})


# ---------------------------------------------------------------------- configuration and defaults


def test_default_retention_in_days_and_years_applies_to_new_versions(rep: Replica) -> None:
    rep.apply(create(object_lock=True))
    rep.apply(put("plain", obj(), ts=100.0))
    assert "retention" not in meta(rep, "plain")  # lock on, no default: nothing
    assert lock_config(rep, mode="COMPLIANCE", days=2) == {"ok": True}
    rep.apply(put("d", obj(), ts=100.0))
    assert meta(rep, "d")["retention"] == ["COMPLIANCE", 100.0 + 2 * DAY]
    assert lock_config(rep, mode="GOVERNANCE", years=1) == {"ok": True}
    rep.apply(put("y", obj(), ts=100.0))
    assert meta(rep, "y")["retention"] == ["GOVERNANCE", 100.0 + 365 * DAY]
    assert meta(rep, "d")["retention"][0] == "COMPLIANCE"  # a new default changes no version
    # explicit retention wins; a hold alone still gets the default retention
    locked_put(rep, "e", "COMPLIANCE", 5000.0)
    assert meta(rep, "e")["retention"] == ["COMPLIANCE", 5000.0]
    locked_put(rep, "h", hold=True, ts=100.0)
    assert meta(rep, "h") == {"hold": True, "retention": ["GOVERNANCE", 100.0 + 365 * DAY]}
    # a delete marker carries no lock
    r = rep.apply(delete("d", ts=200.0))
    assert rep.apply(delete("d", vid=r["vid"], ts=201.0))["ok"] is True


def test_object_lock_configuration_rules(rep: Replica) -> None:
    rep.apply(create())
    assert lock_config(rep)["err"] == "InvalidBucketState"  # unversioned
    rep.apply({"op": "set_versioning", "bucket": "b", "status": "Suspended"})
    assert lock_config(rep)["err"] == "InvalidBucketState"
    rep.apply({"op": "set_versioning", "bucket": "b", "status": "Enabled"})
    assert rep.apply({"op": "set_object_lock", "bucket": "b", "config": {"enabled": False}})["err"] == "MalformedXML"
    assert lock_config(rep, mode="FOREVER")["err"] == "MalformedXML"
    assert lock_config(rep, mode="GOVERNANCE", days=1) == {"ok": True}
    assert rep.apply({"op": "set_versioning", "bucket": "b", "status": "Suspended"})["err"] == "InvalidBucketState"
    assert lock_config(rep, bucket="nope")["err"] == "NoSuchBucket"


def test_lock_settings_refused_on_a_bucket_without_object_lock(rep: Replica) -> None:
    rep.apply(create())
    rep.apply({"op": "set_versioning", "bucket": "b", "status": "Enabled"})
    r = rep.apply(put("k", obj(meta={"retention": ["GOVERNANCE", 1e9]})))
    assert r["err"] == "InvalidRequest"
    assert rep.apply(put("k", obj(meta={"hold": True})))["err"] == "InvalidRequest"
    vid = rep.apply(put("k", obj()))["vid"]
    assert retention(rep, "k", vid, ["GOVERNANCE", 1e9])["err"] == "InvalidRequest"
    assert hold(rep, "k", vid, True)["err"] == "InvalidRequest"
    assert meta(rep, "k") == {}


# ---------------------------------------------------------------------- deleting locked versions


def test_compliance_version_cannot_be_deleted_until_its_date(rep: Replica) -> None:
    rep.apply(create(object_lock=True))
    vid = locked_put(rep, "k", "COMPLIANCE", 1000.0, cid="a")
    for bypass in (False, True):
        r = rep.apply(delete("k", vid=vid, ts=999.0, bypass=bypass))
        assert (r["ok"], r["err"]) == (False, "AccessDenied")
    assert rep.q(q="object", bucket="b", key="k", vid=vid)["ok"] is True and rep.gc_chunks() == []
    assert rep.apply(delete("k", vid=vid, ts=1000.5))["existed"] is True
    assert rep.gc_chunks() == ["a"]


def test_governance_needs_bypass_and_legal_hold_blocks_everyone(rep: Replica) -> None:
    rep.apply(create(object_lock=True))
    g = locked_put(rep, "g", "GOVERNANCE", 1000.0)
    assert rep.apply(delete("g", vid=g, ts=5.0))["err"] == "AccessDenied"
    assert rep.apply(delete("g", vid=g, ts=5.0, bypass=True))["existed"] is True
    h = locked_put(rep, "h", hold=True)
    assert rep.apply(delete("h", vid=h, ts=5.0, bypass=True))["err"] == "AccessDenied"
    assert hold(rep, "h", h, False) == {"ok": True, "vid": h}
    assert meta(rep, "h", h)["hold"] is False  # OFF is remembered (GetObjectLegalHold answers OFF)
    assert rep.apply(delete("h", vid=h, ts=5.0))["existed"] is True
    # a hold on an expired COMPLIANCE version still blocks
    c = locked_put(rep, "c", "COMPLIANCE", 20.0, hold=True)
    assert rep.apply(delete("c", vid=c, ts=30.0, bypass=True))["err"] == "AccessDenied"


def test_delete_without_vid_in_a_locked_bucket_adds_a_marker(rep: Replica) -> None:
    rep.apply(create(object_lock=True))
    vid = locked_put(rep, "k", "COMPLIANCE", 1e9, cid="a")
    r = rep.apply(delete("k", ts=5.0))
    assert r["ok"] is True and r["marker"] is True
    assert rep.q(q="object", bucket="b", key="k")["err"] == "NoSuchKey"
    assert rep.q(q="object", bucket="b", key="k", vid=vid)["obj"]["meta"]["retention"][0] == "COMPLIANCE"
    # an overwrite is a new version too: the locked one stays
    rep.apply(put("k", obj([chunk("b")]), ts=6.0))
    assert rep.q(q="object", bucket="b", key="k", vid=vid)["ok"] is True and rep.gc_chunks() == []


def test_delete_objects_reports_locked_entries_and_deletes_the_rest(rep: Replica) -> None:
    rep.apply(create(object_lock=True))
    locked = locked_put(rep, "locked", "COMPLIANCE", 1e9, cid="l")
    held = locked_put(rep, "held", hold=True, cid="h")
    free = locked_put(rep, "free", cid="f")
    r = rep.apply({"op": "delete_objects", "bucket": "b", "ts": 5.0, "bypass": True, "entries": [
        ["locked", locked], ["free", free], ["held", held], ["other", None], ["free", "junk"]]})
    assert r["ok"] is True
    assert [(e["key"], e["vid"], e["code"]) for e in r["errors"]] == [
        ("locked", locked, "AccessDenied"), ("held", held, "AccessDenied"), ("free", "junk", "NoSuchVersion")]
    assert [d["key"] for d in r["deleted"]] == ["free", "other"]
    assert r["deleted"][0]["req_vid"] == free and r["deleted"][1]["marker"] is True
    assert rep.gc_chunks() == ["f"]
    for key, vid in (("locked", locked), ("held", held)):
        assert rep.q(q="object", bucket="b", key=key, vid=vid)["ok"] is True


def test_copy_takes_the_destination_lock_never_the_source(rep: Replica) -> None:
    rep.apply(create(object_lock=True))
    lock_config(rep, mode="GOVERNANCE", days=1)
    src = locked_put(rep, "src", "COMPLIANCE", 1e9)
    r = rep.apply({"op": "copy_object", "bucket": "b", "key": "dst", "src_bucket": "b", "src_key": "src",
                   "src_vid": src, "ts": 50.0})
    assert r["ok"] is True
    assert meta(rep, "dst")["retention"] == ["GOVERNANCE", 50.0 + DAY]


# ---------------------------------------------------------------------- set_retention


def test_compliance_retention_can_only_be_extended(rep: Replica) -> None:
    rep.apply(create(object_lock=True))
    vid = locked_put(rep, "k", "COMPLIANCE", 1000.0)
    assert retention(rep, "k", vid, ["COMPLIANCE", 2000.0]) == {"ok": True, "vid": vid}
    for new in (["COMPLIANCE", 1500.0], ["GOVERNANCE", 3000.0], None):
        for bypass in (False, True):
            assert retention(rep, "k", vid, new, bypass=bypass)["err"] == "AccessDenied", (new, bypass)
    assert meta(rep, "k", vid)["retention"] == ["COMPLIANCE", 2000.0]
    # once it expired, anything goes
    assert retention(rep, "k", vid, ["GOVERNANCE", 3000.0], ts=2500.0)["ok"] is True


def test_governance_retention_shortened_or_removed_only_with_bypass(rep: Replica) -> None:
    rep.apply(create(object_lock=True))
    vid = locked_put(rep, "k", "GOVERNANCE", 1000.0)
    assert retention(rep, "k", vid, ["GOVERNANCE", 1500.0])["ok"] is True  # extended
    assert retention(rep, "k", vid, ["GOVERNANCE", 1200.0])["err"] == "AccessDenied"
    assert retention(rep, "k", vid, None)["err"] == "AccessDenied"
    assert retention(rep, "k", vid, ["GOVERNANCE", 1200.0], bypass=True)["ok"] is True
    assert meta(rep, "k", vid)["retention"] == ["GOVERNANCE", 1200.0]
    assert retention(rep, "k", vid, None, bypass=True)["ok"] is True
    assert "retention" not in meta(rep, "k", vid)
    assert rep.apply(delete("k", vid=vid, ts=11.0))["existed"] is True


def test_retention_in_the_past_or_of_an_unknown_mode_is_refused(rep: Replica) -> None:
    rep.apply(create(object_lock=True))
    vid = locked_put(rep, "k")
    for new in (["GOVERNANCE", 10.0], ["GOVERNANCE", 5.0], ["FOREVER", 1e9]):
        assert retention(rep, "k", vid, new, ts=10.0)["err"] == "InvalidArgument", new
    assert "retention" not in meta(rep, "k", vid)
    marker = rep.apply(delete("k", ts=11.0))["vid"]
    assert retention(rep, "k", marker, ["GOVERNANCE", 1e9])["err"] == "MethodNotAllowed"
    assert retention(rep, "k", None, ["GOVERNANCE", 1e9])["err"] == "NoSuchKey"


def test_raising_governance_to_compliance_needs_bypass(rep: Replica) -> None:
    """AWS: in governance mode users can't "alter its lock settings" without
    s3:BypassGovernanceRetention; making the lock COMPLIANCE alters them."""
    rep.apply(create(object_lock=True))
    vid = locked_put(rep, "k", "GOVERNANCE", 1000.0)
    assert retention(rep, "k", vid, ["COMPLIANCE", 2000.0])["err"] == "AccessDenied"
    assert retention(rep, "k", vid, ["COMPLIANCE", 2000.0], bypass=True)["ok"] is True


# ---------------------------------------------------------------------- lifecycle_apply


def lifecycle(rep: Replica, *actions: list[Any], ts: float = 100.0, **extra: Any) -> dict[str, Any]:
    return rep.apply({"op": "lifecycle_apply", "bucket": "b", "actions": list(actions), "ts": ts, **extra})


def test_expire_adds_a_marker_when_versioned_and_deletes_when_not(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(create("v"))
    rep.apply({"op": "set_versioning", "bucket": "v", "status": "Enabled"})
    seq = rep.apply(put("k", obj([chunk("a")])))["version"]
    vseq = rep.apply(put("k", obj([chunk("va")]), bucket="v"))["version"]
    assert lifecycle(rep, ["k", "expire", seq]) == {"ok": True, "expired": 1, "skipped": 0, "aborted": 0}
    assert rep.q(q="object", bucket="b", key="k")["err"] == "NoSuchKey" and rep.gc_chunks() == ["a"]
    r = rep.apply({"op": "lifecycle_apply", "bucket": "v", "actions": [["k", "expire", vseq]], "ts": 100.0})
    assert r["expired"] == 1
    gone = rep.q(q="object", bucket="v", key="k")
    assert gone["err"] == "NoSuchKey" and gone["marker"] is True
    assert rep.gc_chunks() == ["a"]  # the version stays, noncurrent
    # again: the latest is a marker now, nothing to expire
    r = rep.apply({"op": "lifecycle_apply", "bucket": "v", "actions": [["k", "expire", vseq]], "ts": 101.0})
    assert (r["expired"], r["skipped"]) == (0, 1)


def test_stale_actions_are_skipped(rep: Replica) -> None:
    rep.apply(create())
    rep.apply({"op": "set_versioning", "bucket": "b", "status": "Enabled"})
    old = rep.apply(put("k", obj([chunk("a")])))["version"]
    new = rep.apply(put("k", obj([chunk("b")])))["version"]
    r = lifecycle(rep, ["k", "expire", old], ["k", "noncurrent", new], ["k", "marker", new],
                  ["gone", "expire", old], ["k", "noncurrent", 12345])
    assert (r["expired"], r["skipped"]) == (0, 5)
    assert rep.q(q="object", bucket="b", key="k")["obj"]["version"] == new and rep.gc_chunks() == []
    assert lifecycle(rep, ["k", "bogus", new])["err"] == "InvalidArgument"


def test_noncurrent_and_lone_marker_removal(rep: Replica) -> None:
    rep.apply(create())
    rep.apply({"op": "set_versioning", "bucket": "b", "status": "Enabled"})
    v1 = rep.apply(put("k", obj([chunk("a")])))["version"]
    m = rep.apply(delete("k"))
    mseq = int(m["vid"], 16)
    assert (lifecycle(rep, ["k", "marker", mseq])["skipped"]) == 1  # not alone: v1 is under it
    assert lifecycle(rep, ["k", "noncurrent", v1])["expired"] == 1
    assert rep.gc_chunks() == ["a"]
    assert lifecycle(rep, ["k", "noncurrent", mseq])["skipped"] == 1  # a marker is no noncurrent version
    assert lifecycle(rep, ["k", "marker", mseq])["expired"] == 1
    assert rep.q(q="list_versions", bucket="b")["entries"] == []
    assert rep.apply({"op": "delete_bucket", "bucket": "b", "ts": 200.0}) == {"ok": True}


def test_lifecycle_skips_locked_versions(rep: Replica) -> None:
    rep.apply(create(object_lock=True))
    v1 = rep.apply(put("k", obj([chunk("a")], meta={"retention": ["COMPLIANCE", 1e9]})))["version"]
    rep.apply(put("k", obj([chunk("b")], meta={"hold": True})))
    r = lifecycle(rep, ["k", "noncurrent", v1])
    assert (r["ok"], r["expired"], r["skipped"]) == (True, 0, 1)
    assert rep.q(q="object", bucket="b", key="k", vid=f"{v1:016x}")["ok"] is True and rep.gc_chunks() == []
    assert lifecycle(rep, ["k", "noncurrent", v1], ts=2e9)["expired"] == 1


def test_progress_cursor_is_recorded(rep: Replica) -> None:
    rep.apply(create())
    rules = [{"id": "r", "status": "Enabled", "expiration": {"days": 1}}]
    assert rep.apply({"op": "set_bucket_config", "bucket": "b", "name": "lifecycle", "value": rules}) == {"ok": True}
    seq = rep.apply(put("k", obj()))["version"]
    [entry] = rep.q(q="lifecycle_buckets")["buckets"]
    assert (entry["bucket"], entry["rules"], entry["versioning"], entry["progress"]) == ("b", rules, "", None)
    lifecycle(rep, ["k", "expire", seq], cursor="k", examined=3, fresh=True, ts=100.0)
    progress = rep.q(q="lifecycle_buckets")["buckets"][0]["progress"]
    assert progress == {"cursor": "k", "pass_started": 100.0, "last_completed": None, "examined": 3,
                        "expired": 1, "passes": 0}
    lifecycle(rep, cursor="z", examined=2, done=True, ts=110.0)
    progress = rep.q(q="lifecycle_buckets")["buckets"][0]["progress"]
    assert progress == {"cursor": "", "pass_started": 100.0, "last_completed": 110.0, "examined": 5,
                        "expired": 1, "passes": 1}
    assert rep.apply({"op": "lifecycle_apply", "bucket": "nope", "actions": [], "ts": 1.0})["err"] == "NoSuchBucket"


def test_lifecycle_scan_shows_each_key_with_its_history(rep: Replica) -> None:
    rep.apply(create())
    rep.apply({"op": "set_versioning", "bucket": "b", "status": "Enabled"})
    rep.apply(put("a", obj(meta={"tags": {"t": "1"}})))
    rep.apply(put("a", obj(), ts=5.0))
    rep.apply(delete("m", ts=6.0))
    scan = rep.q(q="lifecycle_scan", bucket="b", limit=10)
    assert [k for k, _ in scan["keys"]] == ["a", "m"] and scan["done"] is True
    a = scan["keys"][0][1]
    assert [(h["marker"], h["superseded"], h["tags"]) for h in a] == [(False, None, {}), (False, 5.0, {"t": "1"})]
    assert scan["keys"][1][1][0]["marker"] is True
    assert rep.q(q="lifecycle_scan", bucket="b", after="a", limit=1)["keys"][0][0] == "m"
