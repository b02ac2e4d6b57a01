"""Batch entries (``MetaState._apply_batch``): several clients' commands in one Raft entry
and one SQLite transaction, each under its own savepoint."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.metastate import Replica, chunk, create, delete, obj, put, replica
from tests.unit.test_state_failstop import FailingConnection, StopRecorder


@pytest.fixture
def rep(tmp_path: Path) -> Iterator[Replica]:
    yield from replica(tmp_path)


def batch(*cmds: dict[str, Any]) -> dict[str, Any]:
    return {"op": "batch", "cmds": list(cmds)}


def keys(rep: Replica, bucket: str = "b") -> list[str]:
    return [e["key"] for e in rep.q(q="list", bucket=bucket, prefix="", max_keys=1000)["contents"]]


def test_a_batch_applies_every_command_in_order_in_one_entry(rep: Replica) -> None:
    rep.apply(create())
    before = rep.index
    result = rep.apply(batch(put("a", obj([chunk("c1")])), put("b", obj([chunk("c2")])), delete("a")))
    assert result["ok"] is True
    assert [r["ok"] for r in result["results"]] == [True, True, True]
    assert rep.state.applied_index() == before + 1  # one entry, one applied index
    assert keys(rep) == ["b"]
    assert rep.gc_chunks() == ["c1"]  # the deleted object's chunk, queued in the same transaction


def test_one_failing_command_does_not_undo_or_fail_its_neighbours(rep: Replica) -> None:
    rep.apply(create())
    result = rep.apply(batch(
        put("a", obj([chunk("c1")])),
        put("x", obj([chunk("c2")]), bucket="nope"),  # Failed: NoSuchBucket
        {"op": "put_object", "bucket": "b", "key": "bad", "ts": 1.0},  # malformed: no obj (KeyError)
        put("c", obj([chunk("c3")])),
    ))
    codes = [(r["ok"], r.get("err")) for r in result["results"]]
    assert codes == [(True, None), (False, "NoSuchBucket"), (False, "Internal"), (True, None)]
    assert keys(rep) == ["a", "c"]
    assert not rep.state.db.in_transaction


def test_a_failed_command_rolls_back_what_it_did_before_failing(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj([chunk("c1")])))
    bad = obj([chunk("c3")])
    del bad["sha256"]  # put_object queues the old chunks before it fails on this
    result = rep.apply(batch(put("k", bad), put("j", obj([chunk("c4")]))))
    assert [r.get("err") for r in result["results"]] == ["Internal", None]
    assert rep.gc_chunks() == []
    assert [c[0] for c in rep.q(q="object", bucket="b", key="k")["obj"]["chunks"]] == ["c1"]


def test_two_writes_of_one_key_in_a_versioned_bucket_are_two_versions(rep: Replica) -> None:
    rep.apply(create())
    rep.apply({"op": "set_versioning", "bucket": "b", "status": "Enabled"})
    result = rep.apply(batch(put("k", obj(etag="one")), put("k", obj(etag="two")), delete("k")))
    vids = [r["vid"] for r in result["results"]]
    assert len(set(vids)) == 3 and vids == sorted(vids)  # distinct and in the batch's order
    page = rep.q(q="list_versions", bucket="b", prefix="k")
    assert [(e["vid"], e["marker"]) for e in page["entries"]] == [(vids[2], True), (vids[1], False), (vids[0], False)]


def test_a_retried_request_id_in_the_same_batch_applies_once(rep: Replica) -> None:
    rep.apply(create())
    first = put("k", obj([chunk("c1")]), rid=b"r1")
    result = rep.apply(batch(first, dict(first), put("j", obj([chunk("c2")]), rid=b"r2")))
    assert result["results"][1] == {**result["results"][0], "retried": True}
    again = rep.apply(put("k", obj([chunk("c1")]), rid=b"r2"))  # retried later in its own entry
    assert again["retried"] is True
    assert rep.gc_chunks() == []


def test_commands_that_take_several_positions_are_refused_in_a_batch(rep: Replica) -> None:
    rep.apply(create())
    result = rep.apply(batch(
        {"op": "delete_objects", "bucket": "b", "entries": [["a", None]], "ts": 3.0},
        {"op": "batch", "cmds": []},
        "not a command",
        put("k", obj()),
    ))
    assert [r.get("err") for r in result["results"]] == ["BadRequest", "BadRequest", "BadRequest", None]


@pytest.mark.parametrize("cmds", [[], None, "x", [put("k", obj())] * 1025])
def test_a_malformed_batch_is_refused_whole(rep: Replica, cmds: Any) -> None:
    rep.apply(create())
    assert rep.apply({"op": "batch", "cmds": cmds})["err"] == "BadRequest"
    assert keys(rep) == []


def test_a_replayed_batch_is_skipped(rep: Replica) -> None:
    rep.apply(create())
    entry = batch(put("a", obj([chunk("c1")])), put("b", obj([chunk("c2")])))
    rep.apply(entry)
    assert rep.state.apply(rep.index, entry) == {"ok": False, "err": "Replayed"}
    assert keys(rep) == ["a", "b"]


def test_an_environmental_failure_in_a_batch_stops_before_anything_is_applied(rep: Replica) -> None:
    stops = StopRecorder()
    rep.state.fail_stop = stops
    rep.apply(create())
    applied = rep.state.applied_index()
    dump = rep.dump()
    real = rep.state.db
    error = sqlite3.OperationalError("database or disk is full")
    rep.state.db = FailingConnection(real, error, fail_from=3)  # type: ignore[assignment]
    entry = batch(put("a", obj([chunk("c1")])), put("b", obj([chunk("c2")])), put("c", obj([chunk("c3")])))
    rep.state.apply(applied + 1, entry)
    rep.state.db = real
    assert [i for i, _ in stops.calls] == [applied + 1]
    assert rep.state.applied_index() == applied and rep.dump() == dump  # neither a nor b half-kept
    assert [r["ok"] for r in rep.state.apply(applied + 1, entry)["results"]] == [True, True, True]
