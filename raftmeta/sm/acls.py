"""ACLs of buckets and objects, object ownership and public access blocks, decided
inside the Raft apply (the rules are ``core.acl``'s).

- A bucket's grants live in ``buckets.grants`` (NULL: what its canned ``acl`` column
  says, as every bucket from before full ACLs).
- An object version's owner and grants live in its ``meta`` (``owner`` absent: the bucket
  owner; ``acl`` absent: its owner's full control), so they move with the version
  between ``objects`` and ``versions``.
- A write carries the ACL as asked for (``acl_spec``: a canned name, or grants naming
  users by canonical id or e-mail address, groups by name) and its ``writer``;
  ``settle_object`` resolves them here, where the users, the bucket's ownership rule and
  its public access block are read in the same transaction.
- Ownership (``bucket_config`` ``ownership``): ObjectWriter (the default: the writer owns
  what it writes), BucketOwnerPreferred (a write granting the bucket owner full control
  is the bucket owner's), BucketOwnerEnforced (ACLs are off: the bucket owner owns
  everything and only ACLs that say so are accepted).
- The public access block (``bucket_config`` ``public_access_block``): BlockPublicAcls
  refuses any ACL granting AllUsers or AuthenticatedUsers; IgnorePublicAcls makes
  readers ignore such grants (``check_object`` and the frontend's bucket check).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from core import acl
from core.acl import FULL_CONTROL, Grant
from raftmeta.sm import versions
from raftmeta.sm.tables import Failed, bucket_setting, packb, unpackb

SCHEMA = ""
ROOT_USER = "root"  # the frontends' configured root account (never a row in ``users``)


def migrate(db: sqlite3.Connection) -> None:
    if "grants" not in {row[1] for row in db.execute("PRAGMA table_info(buckets)")}:
        db.execute("ALTER TABLE buckets ADD COLUMN grants BLOB")


# ---------------------------------------------------------------------- reading


def bucket_acl(db: sqlite3.Connection, bucket: str) -> dict[str, Any]:
    """owner, grants, ownership and public access block of a bucket (NoSuchBucket)."""
    row = db.execute("SELECT owner, acl, grants FROM buckets WHERE name=?", (bucket,)).fetchone()
    if row is None:
        raise Failed("NoSuchBucket")
    owner, canned, grants = row
    return {"owner": owner, "grants": unpackb(grants) if grants is not None else acl.canned_grants(canned, owner),
            "ownership": bucket_setting(db, bucket, "ownership") or "",
            "pab": bucket_setting(db, bucket, "public_access_block") or {}}


def object_owner(meta: dict[str, Any], bucket_owner: str) -> str:
    return meta.get("owner") or bucket_owner


def object_grants(meta: dict[str, Any], owner: str) -> list[Grant]:
    grants = meta.get("acl")
    return grants if grants is not None else [["user", owner, FULL_CONTROL]]


def object_decision(info: dict[str, Any], meta: dict[str, Any], user: str | None, need: str) -> bool:
    """Whether ``user`` may ``need`` (an ACL permission) on a version with ``meta``."""
    if info["ownership"] == acl.OWNER_ENFORCED:  # ACLs are off: the bucket owner's alone
        return user is not None and user == info["owner"]
    owner = object_owner(meta, info["owner"])
    return acl.may(object_grants(meta, owner), owner, user, need, bool(info["pab"].get("IgnorePublicAcls")))


def addressed(db: sqlite3.Connection, q: dict[str, Any]) -> versions.Version:
    """``versions.addressed`` for a read: a caller whose access was left to the object's
    ACL (``q['check']``) and who may not list the bucket learns nothing of missing keys,
    versions or markers (AccessDenied, as S3 answers without s3:ListBucket)."""
    try:
        return versions.addressed(db, q["bucket"], q["key"], q.get("vid"))
    except Failed as exc:
        check = q.get("check")
        if check and not check.get("list") and exc.code in ("NoSuchKey", "NoSuchVersion", "MethodNotAllowed"):
            raise Failed("AccessDenied") from None
        raise


def check_object(db: sqlite3.Connection, bucket: str, meta: dict[str, Any], check: dict[str, Any]) -> None:
    """A frontend's read of a version for a caller its bucket access did not settle:
    AccessDenied unless the version's ACL allows ``check['need']``."""
    if not object_decision(bucket_acl(db, bucket), meta, check.get("user"), check["need"]):
        raise Failed("AccessDenied")


# ---------------------------------------------------------------------- resolving


def _user_by(db: sqlite3.Connection, column: str, value: str) -> str | None:
    row = db.execute(f"SELECT name FROM users WHERE {column}=?", (value,)).fetchone()
    return row[0] if row else None


def resolve(db: sqlite3.Connection, spec: dict[str, Any] | None, owner: str, bucket_owner: str | None = None
            ) -> list[Grant]:
    """The grants an ACL request (``spec``) stands for."""
    if not spec or "canned" in spec:
        canned = (spec or {}).get("canned") or "private"
        if canned not in acl.CANNED:
            raise Failed("InvalidArgument", f"Unsupported canned ACL: {canned}")
        return acl.canned_grants(canned, owner, bucket_owner)
    grants: list[Grant] = []
    for kind, value, permission in spec.get("grants", []):
        if permission not in acl.PERMISSIONS:
            raise Failed("MalformedACLError", "The XML you provided was not well-formed or did not validate "
                         "against our published schema")
        if kind == "group":
            if value not in acl.GROUPS:
                raise Failed("InvalidArgument", "Invalid group uri")
            grant: Grant = ["group", value, permission]
        elif kind == "id":
            user = ROOT_USER if value == acl.canonical_id(ROOT_USER) else _user_by(db, "canonical_id", value)
            if user is None:
                raise Failed("InvalidArgument", "Invalid id", ArgumentName="CanonicalUser/ID", ArgumentValue=value)
            grant = ["user", user, permission]
        elif kind == "email":
            user = _user_by(db, "email", value.lower())
            if user is None:
                raise Failed("UnresolvableGrantByEmailAddress", "The e-mail address you provided does not match "
                             "any account on record.", EmailAddress=value)
            grant = ["user", user, permission]
        else:
            raise Failed("MalformedACLError", f"Unsupported grantee type: {kind}")
        if grant not in grants:
            grants.append(grant)
    return grants


def _admit(info: dict[str, Any], grants: list[Grant], owner: str) -> None:
    """Refuse an ACL the bucket's ownership rule or public access block does not allow."""
    if info["ownership"] == acl.OWNER_ENFORCED and not acl.private(grants, owner):
        raise Failed("AccessControlListNotSupported", "The bucket does not allow ACLs")
    if info["pab"].get("BlockPublicAcls") and acl.is_public(grants):
        raise Failed("AccessDenied", "Access Denied")


def settle_object(db: sqlite3.Connection, bucket: str, meta: dict[str, Any]) -> None:
    """Turn a write's ``acl_spec`` and ``writer`` into the version's ``owner`` and ``acl``
    (a write from before ACLs carries neither: its version is the bucket owner's, private)."""
    spec, writer = meta.pop("acl_spec", None), meta.pop("writer", None)
    if spec is None and writer is None:
        return
    info = bucket_acl(db, bucket)
    bucket_owner, ownership = info["owner"], info["ownership"]
    owner = writer or bucket_owner  # an anonymous writer's objects are the bucket owner's
    if ownership == acl.OWNER_ENFORCED or (
            ownership == acl.OWNER_PREFERRED and (spec or {}).get("canned") == "bucket-owner-full-control"):
        owner = bucket_owner
    grants = resolve(db, spec, owner, bucket_owner)
    if ownership == acl.OWNER_ENFORCED and (spec or {}).get("canned") == "bucket-owner-full-control":
        grants = [["user", owner, FULL_CONTROL]]
    _admit(info, grants, owner)
    meta.pop("owner", None)
    meta.pop("acl", None)
    if owner != bucket_owner:
        meta["owner"] = owner
    if grants != [["user", owner, FULL_CONTROL]]:
        meta["acl"] = grants


# ---------------------------------------------------------------------- commands


def bucket_grants_for(db: sqlite3.Connection, bucket: str, owner: str, spec: dict[str, Any] | None) -> bytes | None:
    """A new bucket's grants (None: the canned column says it all)."""
    if not spec or "canned" in spec:
        return None
    return packb(resolve(db, spec, owner))


def cmd_set_bucket_acl(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """PutBucketAcl: ``spec`` (or, from older frontends, a canned ``acl``)."""
    info = bucket_acl(db, cmd["bucket"])
    spec = cmd.get("spec") or {"canned": cmd.get("acl") or "private"}
    grants = resolve(db, spec, info["owner"])
    _admit(info, grants, info["owner"])
    canned = spec.get("canned") if spec.get("canned") in ("private", "public-read", "authenticated-read") else None
    if canned is not None:  # the canned column alone says it, as before full ACLs
        db.execute("UPDATE buckets SET acl=?, grants=NULL WHERE name=?", (canned, cmd["bucket"]))
    else:
        db.execute("UPDATE buckets SET acl='private', grants=? WHERE name=?", (packb(grants), cmd["bucket"]))
    return {}


def cmd_set_object_acl(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """PutObjectAcl on a version (``vid``, else the latest), by ``user``: allowed when
    the version's ACL gives WRITE_ACP, or ``granted`` (the frontend found the caller an
    admin or holding the bucket's full grant)."""
    info = bucket_acl(db, cmd["bucket"])
    version = versions.addressed(db, cmd["bucket"], cmd["key"], cmd.get("vid"))
    meta = version.meta
    if not cmd.get("granted") and not object_decision(info, meta, cmd.get("user"), acl.WRITE_ACP):
        raise Failed("AccessDenied")
    owner = object_owner(meta, info["owner"])
    grants = resolve(db, cmd.get("spec"), owner, info["owner"])
    _admit(info, grants, owner)
    meta.pop("acl", None)
    if grants != [["user", owner, FULL_CONTROL]]:
        meta["acl"] = grants
    versions.update_meta(db, version, meta)
    return {"vid": version.vid}


def cmd_set_ownership(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """Put/DeleteBucketOwnershipControls (``ownership`` None). BucketOwnerEnforced needs a
    bucket ACL that grants no more than its owner's full control, as in S3."""
    info = bucket_acl(db, cmd["bucket"])
    ownership = cmd.get("ownership")
    if ownership is None:
        db.execute("DELETE FROM bucket_config WHERE bucket=? AND name='ownership'", (cmd["bucket"],))
        return {}
    if ownership not in acl.OWNERSHIPS:
        raise Failed("MalformedXML")
    if ownership == acl.OWNER_ENFORCED and not acl.private(info["grants"], info["owner"]):
        raise Failed("InvalidBucketAclWithObjectOwnership", "Bucket cannot have ACLs set with ObjectOwnership's "
                     "BucketOwnerEnforced setting")
    db.execute("INSERT OR REPLACE INTO bucket_config VALUES (?,?,?)", (cmd["bucket"], "ownership", packb(ownership)))
    return {}


COMMANDS = {"set_bucket_acl": cmd_set_bucket_acl, "set_object_acl": cmd_set_object_acl,
            "set_ownership": cmd_set_ownership}


# ---------------------------------------------------------------------- queries


def q_bucket_acl(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    info = bucket_acl(db, q["bucket"])
    if info["ownership"] == acl.OWNER_ENFORCED:
        info["grants"] = [["user", info["owner"], FULL_CONTROL]]
    return info


def q_object_acl(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """GetObjectAcl: the version's owner and grants, READ_ACP checked like a read."""
    info = bucket_acl(db, q["bucket"])
    version = addressed(db, q)
    if q.get("check") and not object_decision(info, version.meta, q["check"].get("user"), acl.READ_ACP):
        raise Failed("AccessDenied")
    owner = object_owner(version.meta, info["owner"])
    grants = object_grants(version.meta, owner)
    if info["ownership"] == acl.OWNER_ENFORCED:
        owner, grants = info["owner"], [["user", info["owner"], FULL_CONTROL]]
    return {"owner": owner, "grants": grants, "vid": version.vid,
            "versioned": bool(versions.versioning(db, q["bucket"]))}


QUERIES = {"bucket_acl": q_bucket_acl, "object_acl": q_object_acl}
