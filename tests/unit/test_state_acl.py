"""ACLs, object ownership and the public access block in the state machine
(``raftmeta.sm.acls``) and their pure rules (``core.acl``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core import acl
from tests.unit.metastate import Replica, chunk, create, obj, put, replica


@pytest.fixture
def rep(tmp_path: Path) -> Iterator[Replica]:
    r = next(g := replica(tmp_path))
    for name, email in (("alice", "alice@example.com"), ("bob", "bob@example.com")):
        assert r.apply({"op": "create_user", "name": name, "email": email, "ts": 1.0})["ok"]
    assert r.apply(create())["ok"]
    yield r
    next(g, None)


def write(rep: Replica, key: str, writer: str | None, spec: dict[str, Any] | None = None, cid: str = "c"
          ) -> dict[str, Any]:
    return rep.apply(put(key, obj([chunk(cid)], meta={"acl_spec": spec, "writer": writer})))


def read(rep: Replica, key: str, user: str | None, need: str = acl.READ, can_list: bool = False) -> dict[str, Any]:
    return rep.q(q="object", bucket="b", key=key, check={"user": user, "need": need, "list": can_list})


def test_canned_acls_expand_with_the_owner_grant_first() -> None:
    assert acl.canned_grants("private", "a") == [["user", "a", "FULL_CONTROL"]]
    assert acl.canned_grants("public-read-write", "a")[1:] == [["group", "AllUsers", "READ"],
                                                             ["group", "AllUsers", "WRITE"]]
    assert acl.canned_grants("bucket-owner-read", "w", "o")[1] == ["user", "o", "READ"]
    assert acl.canned_grants("bucket-owner-full-control", "o", "o") == [["user", "o", "FULL_CONTROL"]]
    assert len(acl.canonical_id("alice")) == 64 and acl.canonical_id("alice") != acl.canonical_id("bob")


def test_owners_keep_acp_and_full_control_covers_all() -> None:
    assert acl.may([], "a", "a", acl.WRITE_ACP) and not acl.may([], "a", "a", acl.READ)
    grants = [["group", "AuthenticatedUsers", "READ"], ["user", "b", "FULL_CONTROL"]]
    assert acl.allows(grants, "x", acl.READ) and not acl.allows(grants, None, acl.READ)
    assert not acl.allows(grants, "x", acl.READ, ignore_public=True)
    assert acl.allows(grants, "b", acl.WRITE_ACP)


def test_a_writer_owns_its_object_and_its_acl_decides_reads(rep: Replica) -> None:
    assert write(rep, "k", "bob")["ok"]
    assert read(rep, "k", "bob")["ok"]
    denied = read(rep, "k", "alice")  # the bucket owner: not granted by bob's private ACL
    assert denied["ok"] is False and denied["err"] == "AccessDenied"
    acl_reply = rep.q(q="object_acl", bucket="b", key="k")
    assert acl_reply["owner"] == "bob" and acl_reply["grants"] == [["user", "bob", "FULL_CONTROL"]]
    assert write(rep, "p", "bob", {"canned": "public-read"})["ok"]
    assert read(rep, "p", None)["ok"] and read(rep, "p", "alice")["ok"]


def test_missing_keys_are_hidden_from_those_who_cannot_list(rep: Replica) -> None:
    assert read(rep, "nope", None)["err"] == "AccessDenied"
    assert read(rep, "nope", None, can_list=True)["err"] == "NoSuchKey"


def test_grants_resolve_ids_and_emails_or_fail_changing_nothing(rep: Replica) -> None:
    spec = {"grants": [["id", acl.canonical_id("alice"), "READ"], ["email", "BOB@example.com", "WRITE_ACP"]]}
    assert write(rep, "k", "alice", spec)["ok"]
    assert rep.q(q="object_acl", bucket="b", key="k")["grants"] == [["user", "alice", "READ"], ["user", "bob", "WRITE_ACP"]]
    before = [line for line in rep.dump() if "'applied'" not in line]
    bad_id = rep.apply({"op": "set_bucket_acl", "bucket": "b", "spec": {"grants": [["id", "_foo", "READ"]]}})
    assert bad_id["err"] == "InvalidArgument"
    bad_mail = rep.apply({"op": "set_bucket_acl", "bucket": "b",
                          "spec": {"grants": [["email", "nobody@example.com", "READ"]]}})
    assert bad_mail["err"] == "UnresolvableGrantByEmailAddress"
    assert [line for line in rep.dump() if "'applied'" not in line] == before


def test_put_object_acl_needs_write_acp(rep: Replica) -> None:
    assert write(rep, "k", "alice")["ok"]
    public = {"canned": "public-read"}
    cmd = {"op": "set_object_acl", "bucket": "b", "key": "k", "spec": public}
    assert rep.apply({**cmd, "user": "bob"})["err"] == "AccessDenied"
    assert rep.apply({**cmd, "user": "alice"})["ok"]  # the owner always may
    assert read(rep, "k", None)["ok"]


def test_revoking_every_grant_leaves_the_owner_its_acl(rep: Replica) -> None:
    assert rep.apply({"op": "set_bucket_acl", "bucket": "b", "spec": {"grants": []}})["ok"]
    info = rep.q(q="bucket_acl", bucket="b")
    assert info["grants"] == [] and info["owner"] == "alice"
    assert rep.apply({"op": "set_bucket_acl", "bucket": "b", "spec": {"canned": "public-read-write"}})["ok"]
    assert rep.q(q="access", bucket="b", user="bob")["grants"][1:] == [["group", "AllUsers", "READ"],
                                                                      ["group", "AllUsers", "WRITE"]]


def test_bucket_owner_enforced_turns_acls_off(rep: Replica) -> None:
    assert rep.apply({"op": "set_bucket_acl", "bucket": "b", "spec": {"canned": "public-read"}})["ok"]
    refused = rep.apply({"op": "set_ownership", "bucket": "b", "ownership": "BucketOwnerEnforced"})
    assert refused["err"] == "InvalidBucketAclWithObjectOwnership"
    assert rep.apply({"op": "set_bucket_acl", "bucket": "b", "spec": {"canned": "private"}})["ok"]
    assert rep.apply({"op": "set_ownership", "bucket": "b", "ownership": "BucketOwnerEnforced"})["ok"]
    assert write(rep, "k", "bob", {"canned": "public-read"})["err"] == "AccessControlListNotSupported"
    assert write(rep, "k", "bob", {"canned": "bucket-owner-full-control"})["ok"]
    assert rep.q(q="object_acl", bucket="b", key="k")["owner"] == "alice"
    assert read(rep, "k", "alice")["ok"] and read(rep, "k", "bob")["err"] == "AccessDenied"
    assert rep.apply({"op": "set_ownership", "bucket": "b", "ownership": None})["ok"]
    assert rep.q(q="bucket_config", bucket="b", name="ownership")["value"] is None


def test_bucket_owner_preferred_takes_objects_granted_to_it(rep: Replica) -> None:
    assert rep.apply({"op": "set_ownership", "bucket": "b", "ownership": "BucketOwnerPreferred"})["ok"]
    assert write(rep, "mine", "bob")["ok"]
    assert write(rep, "theirs", "bob", {"canned": "bucket-owner-full-control"})["ok"]
    assert rep.q(q="object_acl", bucket="b", key="mine")["owner"] == "bob"
    assert rep.q(q="object_acl", bucket="b", key="theirs")["owner"] == "alice"


def test_public_access_block(rep: Replica) -> None:
    assert write(rep, "k", "alice", {"canned": "public-read"})["ok"]
    pab = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": False,
           "RestrictPublicBuckets": False}
    assert rep.apply({"op": "set_bucket_config", "bucket": "b", "name": "public_access_block", "value": pab})["ok"]
    assert read(rep, "k", None)["err"] == "AccessDenied"  # its public grant is ignored now
    assert write(rep, "k2", "alice", {"canned": "public-read"})["err"] == "AccessDenied"
    assert rep.apply({"op": "set_bucket_acl", "bucket": "b", "spec": {"canned": "authenticated-read"}})["err"] \
        == "AccessDenied"
    assert write(rep, "k3", "alice", {"canned": "private"})["ok"]


def test_copies_get_their_own_owner_and_acl(rep: Replica) -> None:
    assert write(rep, "src", "bob", {"canned": "public-read"})["ok"]
    reply = rep.apply({"op": "copy_object", "src_bucket": "b", "src_key": "src", "bucket": "b", "key": "dst",
                       "ts": 3.0, "writer": "alice", "acl_spec": None})
    assert reply["ok"], reply
    assert rep.q(q="object_acl", bucket="b", key="dst") | {"vid": None} == {
        "owner": "alice", "grants": [["user", "alice", "FULL_CONTROL"]], "vid": None, "versioned": False, "ok": True}


def test_entries_from_before_acls_replay_as_the_bucket_owners(rep: Replica) -> None:
    assert rep.apply(put("old", obj([chunk("o")])))["ok"]  # no acl_spec, no writer
    assert rep.q(q="object_acl", bucket="b", key="old")["owner"] == "alice"
    assert rep.apply({"op": "set_bucket_acl", "bucket": "b", "acl": "public-read"})["ok"]  # an old frontend's
    assert rep.q(q="bucket_acl", bucket="b")["grants"][1] == ["group", "AllUsers", "READ"]
