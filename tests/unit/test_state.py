"""Tests of raftmeta.state.MetaState: the SQLite state machine every Raft replica applies:
idempotent replay, request-id dedupe, and an ``apply`` that never raises.

Each test drives a real MetaState on a temp-file database, the way raftmeta.node does:
``apply(index, cmd)`` once per committed entry, ``query(q)`` to read.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftmeta.state import REQUEST_MEMORY, MetaState
from tests.unit.metastate import Replica, chunk, create, delete, obj, put, replica

NO_VERSIONS = {"noncurrent_versions": 0, "noncurrent_bytes": 0, "delete_markers": 0}


@pytest.fixture
def rep(tmp_path: Path) -> Iterator[Replica]:
    yield from replica(tmp_path)


# ---------------------------------------------------------------------- idempotent replay


def test_entry_at_or_below_last_applied_is_skipped(rep: Replica) -> None:
    assert rep.state.apply(1, create("one")) == {"ok": True}
    assert rep.state.apply(1, create("two")) == {"ok": False, "err": "Replayed"}
    assert rep.state.apply(0, create("three")) == {"ok": False, "err": "Replayed"}
    # indexes may jump (barriers, other replicas' entries); older ones are still skipped
    assert rep.state.apply(5, create("five"))["ok"] is True
    assert rep.state.apply(3, create("three"))["err"] == "Replayed"
    assert rep.state.apply(5, create("again"))["err"] == "Replayed"
    assert [b[0] for b in rep.q(q="buckets")["buckets"]] == ["five", "one"]
    assert rep.state.applied_index() == 5
    assert rep.state.last_applied == 5


def test_reopened_state_remembers_applied_index_and_skips_replays(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    log = [
        create("b"),
        put("k", obj([chunk("c1"), chunk("c2")])),
        put("k", obj([chunk("c3")])),  # queues c1, c2
        put("j", obj([chunk("c4")], size=7)),
        delete("k"),  # queues c3
        {"op": "delete_bucket", "bucket": "nope"},  # fails, but is still an applied entry
    ]
    first = MetaState(str(path))
    results = [first.apply(i, cmd) for i, cmd in enumerate(log, start=1)]
    assert [r["ok"] for r in results] == [True, True, True, True, True, False]
    before = list(first.db.iterdump())
    stats = first.query({"q": "stats"})
    first.close()

    second = MetaState(str(path))  # a new object on the same file: a restarted replica
    try:
        assert second.last_applied == len(log)
        assert second.applied_index() == len(log)
        # PySyncObj replays its whole journal on start: every entry must be a no-op now
        for i, cmd in enumerate(log, start=1):
            assert second.apply(i, cmd) == {"ok": False, "err": "Replayed"}
        assert list(second.db.iterdump()) == before
        assert second.query({"q": "stats"}) == stats == {
            "ok": True, "buckets": 1, "objects": 1, "bytes": 7, "gc_queue": 3, **NO_VERSIONS,
        }
        # and the log continues from where it was
        assert second.apply(len(log) + 1, put("k", obj([chunk("c5")]))) == {"ok": True, "version": len(log) + 1}
    finally:
        second.close()


def test_reopen_method_rereads_applied_index(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj()))
    rep.state.reopen()
    assert rep.state.last_applied == 2
    assert rep.state.apply(2, put("k", obj([chunk("x")])))["err"] == "Replayed"
    assert rep.q(q="object", bucket="b", key="k")["obj"]["chunks"] == []


def test_failed_command_still_advances_applied_index_durably(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    s = MetaState(str(path))
    assert s.apply(1, {"op": "delete_bucket", "bucket": "missing"})["err"] == "NoSuchBucket"
    s.close()
    s = MetaState(str(path))
    try:
        assert s.last_applied == 1
    finally:
        s.close()


def test_barrier_changes_nothing_and_consumes_its_index(rep: Replica) -> None:
    rep.apply(create())
    dump = rep.dump()
    assert rep.state.apply(2, {"op": "barrier"}) == {"ok": True, "index": 2}
    assert rep.dump() == dump
    assert rep.q(q="stats") == {"ok": True, "buckets": 1, "objects": 0, "bytes": 0, "gc_queue": 0, **NO_VERSIONS}
    assert rep.state.apply(2, create("other"))["err"] == "Replayed"
    assert rep.state.apply(3, create("other")) == {"ok": True}


def test_replicas_applying_the_same_log_are_identical(tmp_path: Path) -> None:
    """Determinism: time comes from the command, so two replicas end byte-for-byte equal."""
    a, b = Replica(tmp_path / "a.db"), Replica(tmp_path / "b.db")
    rng = random.Random(7)
    log: list[dict[str, Any]] = [create("b"), create("c", owner="bob")]
    for n in range(60):
        key = rng.choice(["x", "y", "z/1", "z/2"])
        roll = rng.random()
        if roll < 0.6:
            log.append(put(key, obj([chunk(f"c{n}a"), chunk(f"c{n}b")], size=n), ts=float(n), rid=f"r{n}".encode()))
        elif roll < 0.85:
            log.append(delete(key, ts=float(n)))
        else:
            log.append({"op": "node_heartbeat", "node_id": f"n{n % 3}", "addr": "h:1", "capacity": 10, "used": n,
                        "ts": float(n)})
    try:
        ra = [a.apply(c) for c in log]
        rb = [b.apply(c) for c in log]
        assert ra == rb
        assert a.dump() == b.dump()
    finally:
        a.state.close()
        b.state.close()


# ---------------------------------------------------------------------- request-id dedupe


def test_retried_create_bucket_returns_first_result_not_already_owned(rep: Replica) -> None:
    assert rep.apply(create(rid=b"r1")) == {"ok": True}
    assert rep.apply(create(rid=b"r1")) == {"ok": True, "retried": True}
    assert rep.state.applied_index() == 2  # the retry is still an applied entry
    # a genuinely new request for the same bucket is a conflict
    assert rep.apply(create(rid=b"r2"))["err"] == "BucketAlreadyOwnedByYou"


def test_retried_put_object_does_not_queue_its_own_chunks(rep: Replica) -> None:
    rep.apply(create())
    cmd = put("k", obj([chunk("c1"), chunk("c2")]), rid=b"put-1")
    first = rep.apply(cmd)
    assert first == {"ok": True, "version": 2}
    dump = rep.dump()
    again = rep.apply(cmd)
    assert again == {"ok": True, "version": 2, "retried": True}
    assert rep.gc_chunks() == []
    o = rep.q(q="object", bucket="b", key="k")["obj"]
    assert o["version"] == 2
    assert [c[0] for c in o["chunks"]] == ["c1", "c2"]
    # nothing but the applied index changed
    assert [line for line in rep.dump() if "'applied'" not in line] == [
        line for line in dump if "'applied'" not in line
    ]


def test_retried_failure_returns_the_first_failure_even_if_it_would_now_succeed(rep: Replica) -> None:
    rep.apply(create("b", owner="alice"))
    cmd = create("b", owner="bob", rid=b"bob-1")
    assert rep.apply(cmd)["err"] == "BucketAlreadyExists"
    assert rep.apply({"op": "delete_bucket", "bucket": "b"}) == {"ok": True}
    retried = rep.apply(cmd)
    assert retried["ok"] is False
    assert retried["err"] == "BucketAlreadyExists"
    assert retried["retried"] is True
    assert rep.q(q="bucket", bucket="b")["err"] == "NoSuchBucket"  # applied once: not created now


def test_retried_delete_object_does_not_delete_a_newer_version(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj([chunk("old")])))
    d = delete("k", rid=b"del-1")
    assert rep.apply(d) == {"ok": True, "existed": True}
    rep.apply(put("k", obj([chunk("new")])))
    assert rep.apply(d) == {"ok": True, "existed": True, "retried": True}
    assert rep.q(q="object", bucket="b", key="k")["obj"]["chunks"][0][0] == "new"
    assert rep.gc_chunks() == ["old"]


def test_request_ids_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    s = MetaState(str(path))
    s.apply(1, create(rid=b"r"))
    s.close()
    s = MetaState(str(path))
    try:
        assert s.apply(2, create(rid=b"r")) == {"ok": True, "retried": True}
    finally:
        s.close()


def test_request_ids_are_remembered_for_request_memory_entries(rep: Replica) -> None:
    assert rep.state.apply(1, create("old", rid=b"old")) == {"ok": True}
    assert rep.state.apply(2000, create("mid", rid=b"mid")) == {"ok": True}
    # a write with a rid at a multiple of 1000 prunes ids older than REQUEST_MEMORY entries
    prune_at = 1000 + REQUEST_MEMORY
    assert rep.state.apply(prune_at, create("new", rid=b"new")) == {"ok": True}
    # 'mid' is within the memory: still recognised
    assert rep.state.apply(prune_at + 1, create("mid", rid=b"mid")) == {"ok": True, "retried": True}
    # 'old' is more than REQUEST_MEMORY entries back: forgotten, so it runs again
    assert rep.state.apply(prune_at + 2, create("old", rid=b"old"))["err"] == "BucketAlreadyOwnedByYou"


# ---------------------------------------------------------------------- apply never raises


def test_unknown_op_is_a_bad_request_and_the_log_goes_on(rep: Replica) -> None:
    r = rep.apply({"op": "drop_everything", "bucket": "b"})
    assert r["ok"] is False and r["err"] == "BadRequest"
    r = rep.apply({"bucket": "b"})  # no op at all
    assert r["ok"] is False and r["err"] == "BadRequest"
    assert rep.state.applied_index() == 2
    assert rep.apply(create()) == {"ok": True}


@pytest.mark.parametrize(
    "cmd",
    [
        {"op": "create_bucket", "bucket": "b", "ts": 1.0},  # no owner
        {"op": "create_bucket", "owner": "alice", "ts": 1.0},  # no bucket
        {"op": "put_object", "bucket": "b", "key": "k", "ts": 1.0},  # no obj
        {"op": "put_object", "bucket": "b", "key": "k", "obj": {"size": 1}, "ts": 1.0},  # obj missing fields
        {"op": "delete_object", "bucket": "b"},
        {"op": "gc_done"},
        {"op": "node_heartbeat", "node_id": "n1"},
        {"op": "discard_chunks", "chunks": [["c"]], "ts": 1.0},  # entry too short
        {"op": "create_bucket", "bucket": "x", "owner": "o", "ts": 1.0, "rid": {"not": "bindable"}},
    ],
)
def test_malformed_command_is_an_internal_error_not_an_exception(rep: Replica, cmd: dict[str, Any]) -> None:
    rep.apply(create("b"))
    dump = rep.content()
    result = rep.apply(cmd)  # must not raise
    assert result["ok"] is False
    assert result["err"] == "Internal"
    assert isinstance(result["msg"], str)
    assert not rep.state.db.in_transaction  # rolled back, not left open
    assert rep.content() == dump  # nothing half-applied (the entry counts as applied)
    # the state machine keeps going, and the failed entry is not replayed over later ones
    assert rep.apply(put("k2", obj([chunk("z")]))) == {"ok": True, "version": rep.index}
    assert rep.state.apply(rep.index - 1, cmd)["err"] == "Replayed"


def test_failure_after_partial_work_rolls_everything_back(rep: Replica) -> None:
    """put_object queues the old chunks before it writes the row; a failure must undo both."""
    rep.apply(create())
    rep.apply(put("k", obj([chunk("c1"), chunk("c2")])))
    bad = obj([chunk("c3")])
    del bad["sha256"]
    dump = rep.content()
    result = rep.apply(put("k", bad))
    assert result["err"] == "Internal"
    assert rep.gc_chunks() == []
    assert [c[0] for c in rep.q(q="object", bucket="b", key="k")["obj"]["chunks"]] == ["c1", "c2"]
    assert rep.content() == dump
    # and after a restart too
    rep.state.reopen()
    assert rep.gc_chunks() == []
    assert rep.apply(put("k", obj([chunk("c3")])))["ok"] is True
    assert sorted(rep.gc_chunks()) == ["c1", "c2"]


def test_failed_command_with_rid_is_rolled_back_but_remembered(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj()))
    cmd = {"op": "delete_bucket", "bucket": "b", "rid": b"d"}
    assert rep.apply(cmd)["err"] == "BucketNotEmpty"
    rep.apply(delete("k"))
    assert rep.apply(cmd)["err"] == "BucketNotEmpty"  # first answer, not a second attempt
    assert rep.q(q="bucket", bucket="b")["ok"] is True
