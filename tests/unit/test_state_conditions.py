"""Tests of conditional writes and deletes decided in the state machine's apply
(``raftmeta.sm.objects``: ``_check``, ``check_delete``): If-None-Match with ETags,
If-Match, AWS's 409 for a delete during the write, and DeleteObject / DeleteObjects
conditions on ETag, last-modified time and size. Helpers: ``tests.unit.metastate``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from frontend import conditions
from frontend.errors import S3Error
from tests.unit.metastate import Replica, chunk, create, delete, obj, put, replica


@pytest.fixture
def rep(tmp_path: Path) -> Iterator[Replica]:
    yield from replica(tmp_path)


def enabled(rep: Replica) -> None:
    rep.apply(create())
    assert rep.apply({"op": "set_versioning", "bucket": "b", "status": "Enabled"})["ok"]


def etag(rep: Replica, key: str = "k") -> str | None:
    reply = rep.q(q="object", bucket="b", key=key)
    return reply["obj"]["etag"] if reply["ok"] else None


# ---------------------------------------------------------------------- writes


def test_if_none_match_with_etags_fails_only_on_a_match(rep: Replica) -> None:
    rep.apply(create())
    assert rep.apply(put("k", obj(etag="e1"), cond={"if_none_match": ["e1"]}))["ok"]  # absent: no match
    assert rep.apply(put("k", obj(etag="e2"), cond={"if_none_match": ["zz", "e1"]}))["err"] == "PreconditionFailed"
    assert rep.apply(put("k", obj(etag="e2"), cond={"if_none_match": ["*"]}))["err"] == "PreconditionFailed"
    assert rep.apply(put("k", obj(etag="e2"), cond={"if_none_match": ["zz"]}))["ok"]
    assert etag(rep) == "e2"
    assert rep.apply(put("k", obj(etag="e3"), cond={"if_none_match": True}))["err"] == "PreconditionFailed"


def test_if_match_on_a_missing_key_is_no_such_key_and_a_wrong_etag_412(rep: Replica) -> None:
    rep.apply(create())
    assert rep.apply(put("k", obj(), cond={"if_match": ["*"]}))["err"] == "NoSuchKey"
    rep.apply(put("k", obj(etag="e1")))
    assert rep.apply(put("k", obj(etag="e2"), cond={"if_match": ["bad"]}))["err"] == "PreconditionFailed"
    assert rep.apply(put("k", obj(etag="e2"), cond={"if_match": ["e1"]}))["ok"]
    assert rep.apply(put("k", obj(etag="e3"), cond={"if_match": ["*"]}))["ok"]
    assert etag(rep) == "e3"


def test_a_delete_after_the_write_began_is_a_conflict(rep: Replica) -> None:
    enabled(rep)
    rep.apply(put("k", obj(etag="e1")))
    rep.apply(delete("k", ts=10.0))  # a marker at 10
    started_before = {"if_match": ["e1"], "since": 9.0}
    assert rep.apply(put("k", obj(), ts=11.0, cond=started_before))["err"] == "ConditionalRequestConflict"
    assert rep.apply(put("k", obj(), ts=11.0, cond={"if_none_match": True, "since": 9.0}))["err"] == \
        "ConditionalRequestConflict"
    # begun after the delete: judged on the key as it is
    assert rep.apply(put("k", obj(), ts=11.0, cond={"if_match": ["e1"], "since": 10.5}))["err"] == "NoSuchKey"
    assert rep.apply(put("k", obj(etag="e2"), ts=11.0, cond={"if_none_match": True, "since": 10.5}))["ok"]
    assert etag(rep) == "e2"


def test_complete_upload_applies_the_condition_at_commit(rep: Replica) -> None:
    rep.apply(create())
    rep.apply({"op": "create_upload", "upload_id": "u1", "bucket": "b", "key": "k", "ts": 1.0})
    rep.apply({"op": "put_part", "upload_id": "u1", "bucket": "b", "key": "k", "number": 1, "ts": 1.0,
               "part": {"size": 3, "etag": "p1", "checksum": {}, "chunks": [chunk("c1")]}})
    rep.apply(put("k", obj(etag="other")))  # written while the upload was open
    done = {"op": "complete_upload", "upload_id": "u1", "bucket": "b", "key": "k", "parts": [[1, "p1"]],
            "obj": {"etag": "m-1", "sha256": "", "content_type": "a/b", "created": 2.0, "meta": {}}, "ts": 2.0}
    assert rep.apply({**done, "cond": {"if_none_match": True}})["err"] == "PreconditionFailed"
    assert rep.apply({**done, "cond": {"if_match": ["stale"]}})["err"] == "PreconditionFailed"
    assert rep.q(q="upload", upload_id="u1")["ok"]  # a refused Complete leaves the upload open
    assert rep.apply({**done, "cond": {"if_match": ["other"]}})["ok"]
    assert etag(rep) == "m-1"


# ---------------------------------------------------------------------- deletes


def test_delete_if_match_etag_time_and_size(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj(etag="e1", size=7, created=100.25)))
    for cond in ({"if_match": ["bad"]}, {"mtime": 99.0}, {"size": 8}, {"if_match": ["e1"], "size": 8}):
        assert rep.apply(delete("k", cond=cond))["err"] == "PreconditionFailed", cond
    assert etag(rep) == "e1"
    assert rep.apply(delete("k", cond={"if_match": ["e1"], "mtime": 100.0, "size": 7}))["ok"]
    assert etag(rep) is None
    # a missing object: deleted "if it doesn't exist", 204
    assert rep.apply(delete("k", cond={"if_match": ["bad"], "size": 1}))["ok"]


def test_delete_conditions_in_a_versioned_bucket(rep: Replica) -> None:
    enabled(rep)
    vid = rep.apply(put("k", obj(etag="e1", size=0)))["vid"]
    assert rep.apply(delete("k", vid=vid, cond={"if_match": ["bad"]}))["err"] == "PreconditionFailed"
    marker = rep.apply(delete("k", cond={"if_match": ["e1"]}))  # the current one: a marker
    assert marker["ok"] and marker["marker"]
    # the latest is a marker now: no object to mismatch
    assert rep.apply(delete("k", cond={"if_match": ["bad"]}))["ok"]
    assert rep.apply(delete("k", vid=vid, cond={"size": 0}))["ok"]  # that version, for good
    assert rep.apply(delete("k", vid=vid, cond={"if_match": ["bad"]}))["ok"]  # gone: 204


def test_delete_objects_judges_each_entry(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("a", obj(etag="ea")))
    rep.apply(put("b", obj(etag="eb")))
    reply = rep.apply({"op": "delete_objects", "bucket": "b", "ts": 3.0,
                       "entries": [["a", None, {"if_match": ["bad"]}], ["b", None, {"if_match": ["eb"]}],
                                   ["c", None]]})
    assert [d["key"] for d in reply["deleted"]] == ["b", "c"]
    assert [(e["key"], e["code"]) for e in reply["errors"]] == [("a", "PreconditionFailed")]
    assert etag(rep, "a") == "ea" and etag(rep, "b") is None


# ---------------------------------------------------------------------- the frontend's conditions


class Headers(dict[str, Any]):
    pass


def test_write_condition_forms() -> None:
    assert conditions.write_condition(Headers()) == {}
    assert conditions.write_condition(Headers(), since=5.0) == {}
    assert conditions.write_condition(Headers({"if-none-match": "*"}), since=5.0) == {"if_none_match": True,
                                                                                      "since": 5.0}
    assert conditions.write_condition(Headers({"if-none-match": '"e1", W/"e2"'})) == {"if_none_match": ["e1", "e2"]}
    assert conditions.write_condition(Headers({"if-match": '"e1"'})) == {"if_match": ["e1"]}


def test_delete_condition_parses_dates_and_sizes() -> None:
    headers = Headers({"if-match": '"e1"', "x-amz-if-match-last-modified-time": "Thu, 01 Jan 2015 00:00:00 GMT",
                       "x-amz-if-match-size": "12"})
    assert conditions.delete_condition(headers) == {"if_match": ["e1"], "mtime": 1420070400.0, "size": 12}
    assert conditions.entry_condition(None, "2015-01-01T00:00:00.000Z", None) == {"mtime": 1420070400.0}
    assert conditions.entry_condition(None, "2015-01-01T00:00:00", None) == {"mtime": 1420070400.0}
    for bad in ((None, "yesterday", None), (None, None, "x"), (None, None, "-1")):
        with pytest.raises(S3Error) as err:
            conditions.entry_condition(*bad)
        assert err.value.code == "InvalidArgument"
