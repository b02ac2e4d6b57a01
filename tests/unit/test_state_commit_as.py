"""A write that carries its caller's authorization (``as``, ``raftmeta.sm.iam.check_as``):
the state machine checks the key, its secret's digest and the bucket access in the
command's own apply, and a refused command changes nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.metastate import Replica, create, obj, put, replica


@pytest.fixture
def rep(tmp_path: Path) -> Iterator[Replica]:
    r = next(g := replica(tmp_path))
    for name, admin in (("alice", False), ("bob", False), ("ops", True)):
        assert r.apply({"op": "create_user", "name": name, "admin": admin, "ts": 1.0})["ok"]
        assert r.apply({"op": "create_key", "user": name, "access_key": f"AK{name}", "secret": f"s-{name}",
                        "ts": 1.0})["ok"]
    assert r.apply(create())["ok"]  # bucket b, owned by alice
    yield r
    next(g, None)


def caller(name: str, bucket: str = "b", secret: str | None = None, user: str | None = None) -> dict[str, Any]:
    return {"access_key": f"AK{name}", "secret": hashlib.sha256((secret or f"s-{name}").encode()).hexdigest(),
            "user": user or name, "bucket": bucket, "need": "write"}


def stored(rep: Replica, key: str) -> bool:
    return bool(rep.q(q="object", bucket="b", key=key).get("ok"))


def test_the_owner_and_a_granted_user_write(rep: Replica) -> None:
    assert rep.apply(put("a", obj(), **{"as": caller("alice")}))["ok"]
    assert rep.apply({"op": "grant", "bucket": "b", "user": "bob", "permission": "write", "ts": 1.0})["ok"]
    assert rep.apply(put("b", obj(), **{"as": caller("bob")}))["ok"]
    assert rep.apply(put("c", obj(), **{"as": caller("ops")}))["ok"]  # an admin
    assert stored(rep, "a") and stored(rep, "b") and stored(rep, "c")
    assert rep.apply({"op": "grant", "bucket": "b", "user": "bob", "permission": "read", "ts": 1.0})["ok"]
    assert rep.apply(put("d", obj(), **{"as": caller("bob")}))["err"] == "AccessDenied"  # read is not write


@pytest.mark.parametrize(("who", "expected"), [
    (caller("bob"), "AccessDenied"),  # no grant
    (caller("alice", bucket="nope"), "NoSuchBucket"),
    (caller("alice", secret="another"), "InvalidAccessKeyId"),  # not the secret the signature was checked with
    (caller("alice", user="bob"), "InvalidAccessKeyId"),
    ({**caller("alice"), "access_key": "AKgone"}, "InvalidAccessKeyId"),
])
def test_a_refused_caller_changes_nothing(rep: Replica, who: dict[str, Any], expected: str) -> None:
    reply = rep.apply(put("k", obj(), **{"as": who}))
    assert reply["ok"] is False and reply["err"] == expected
    assert not stored(rep, "k")


def test_a_deleted_key_is_refused_at_its_next_commit(rep: Replica) -> None:
    assert rep.apply(put("k", obj(), **{"as": caller("alice")}))["ok"]
    assert rep.apply({"op": "delete_key", "access_key": "AKalice", "ts": 2.0})["ok"]
    reply = rep.apply(put("k2", obj(), **{"as": caller("alice")}))
    assert reply["err"] == "InvalidAccessKeyId" and not stored(rep, "k2")


def test_authorization_errors_come_before_the_commands_own(rep: Replica) -> None:
    assert rep.apply(put("k", obj(), **{"as": caller("alice")}))["ok"]
    refused = rep.apply(put("k", obj(), cond={"if_none_match": True}, **{"as": caller("bob")}))
    assert refused["err"] == "AccessDenied"
    malformed = rep.apply(put("k", obj(), **{"as": "not a caller"}))
    assert malformed["err"] == "InvalidAccessKeyId"
