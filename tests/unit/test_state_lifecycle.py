"""The lifecycle chore's side of the state machine: a batch evaluated against rules
since replaced changes nothing, keys are found however many versions each has, a
never-versioned bucket's objects keep the Raft index as their version."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raftmeta.sm.lifecycle import rules_digest
from tests.unit.metastate import Replica, create, delete, obj, put, replica

RULE = {"id": "r", "status": "Enabled", "filter": {"prefix": "", "tags": {}, "gt": None, "lt": None},
        "expiration": {"days": 1}, "noncurrent": None, "abort_days": None, "transitions": [],
        "noncurrent_transitions": []}


@pytest.fixture
def rep(tmp_path: Path) -> Iterator[Replica]:
    yield from replica(tmp_path)


def set_rules(rep: Replica, rules: list) -> None:
    assert rep.apply({"op": "set_bucket_config", "bucket": "b", "name": "lifecycle", "value": rules})["ok"]


def test_a_batch_evaluated_against_replaced_rules_changes_nothing(rep: Replica) -> None:
    rep.apply(create())
    seq = rep.apply(put("k", obj()))["version"]
    set_rules(rep, [RULE])
    old = rep.q(q="lifecycle_buckets")["buckets"][0]["digest"]
    set_rules(rep, [{**RULE, "status": "Disabled"}])  # the operator turned the rule off meanwhile
    reply = rep.apply({"op": "lifecycle_apply", "bucket": "b", "ts": 9.0, "actions": [["k", "expire", seq]],
                       "cursor": "k", "examined": 1, "done": True, "rules": old})
    assert reply["ok"] and reply["changed"] and reply["expired"] == 0
    assert rep.q(q="object", bucket="b", key="k")["ok"]
    assert rep.q(q="lifecycle_buckets")["buckets"][0]["progress"] is None  # the cursor did not move
    current = rules_digest([{**RULE, "status": "Disabled"}])
    assert rep.q(q="lifecycle_buckets")["buckets"][0]["digest"] == current


def test_scan_finds_keys_past_long_histories(rep: Replica) -> None:
    rep.apply(create())
    rep.apply({"op": "set_versioning", "bucket": "b", "status": "Enabled"})
    for _ in range(50):
        rep.apply(put("a", obj()))
    rep.apply(delete("a"))  # "a" now lives only in versions: 50 noncurrent and a marker
    rep.apply(put("b", obj()))
    rep.apply(delete("c"))  # a key that is only a marker
    scan = rep.q(q="lifecycle_scan", bucket="b", after="", limit=2)
    assert [k for k, _ in scan["keys"]] == ["a", "b"] and not scan["done"]
    assert len(scan["keys"][0][1]) == 51
    scan = rep.q(q="lifecycle_scan", bucket="b", after="b", limit=2)
    assert [k for k, _ in scan["keys"]] == ["c"] and scan["done"]


def test_never_versioned_objects_keep_the_raft_index_as_version(rep: Replica) -> None:
    rep.apply(create())
    assert rep.apply(put("k", obj()))["version"] == rep.index
    rep.apply({"op": "set_versioning", "bucket": "b", "status": "Enabled"})
    later = rep.apply(put("k", obj()))["version"]
    assert later > rep.index  # index * 1024: above every seq of the unversioned past
    listed = rep.q(q="list_versions", bucket="b")["entries"]
    assert [e["vid"] == "null" for e in listed] == [False, True]
