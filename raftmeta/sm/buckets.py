"""Buckets: creation and ownership, deletion (refused while objects remain; in-progress
uploads, grants and configuration go with the bucket), and per-bucket sub-resource
documents (``bucket_config``: CORS, lifecycle; versioning and object lock, which their
own commands in ``versions`` write)."""

from __future__ import annotations

import sqlite3
from typing import Any

from core import acl
from raftmeta.sm import acls, iam, lifecycle, multipart, versions
from raftmeta.sm.tables import Failed, bucket_exists, packb, unpackb

SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, created REAL NOT NULL, acl TEXT NOT NULL DEFAULT 'private',
    grants BLOB
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bucket_config (
    bucket TEXT NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (bucket, name)
) WITHOUT ROWID;
"""


# Settings with rules of their own (versioning never returns to unversioned, object lock
# never turns off, BucketOwnerEnforced needs a private ACL): only their commands in
# ``versions`` and ``acls`` write them.
GUARDED = ("versioning", "object_lock", "ownership")


def cmd_create_bucket(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """``acl`` a canned ACL, or ``acl_spec`` (grant headers, resolved by ``acls``);
    ``ownership`` the bucket's ObjectOwnership, if the request named one."""
    row = db.execute("SELECT owner FROM buckets WHERE name=?", (cmd["bucket"],)).fetchone()
    spec = cmd.get("acl_spec") or {"canned": cmd.get("acl") or "private"}
    canned = spec.get("canned") if spec.get("canned") in ("private", "public-read", "authenticated-read") else None
    ownership = cmd.get("ownership")
    if ownership is not None and ownership not in acl.OWNERSHIPS:
        raise Failed("InvalidArgument", f"Invalid x-amz-object-ownership header: {ownership}")
    grants = acls.resolve(db, spec, cmd["owner"])
    if ownership == acl.OWNER_ENFORCED and not acl.private(grants, cmd["owner"]):
        raise Failed("InvalidBucketAclWithObjectOwnership", "Bucket cannot have ACLs set with ObjectOwnership's "
                     "BucketOwnerEnforced setting")
    stored = None if canned is not None else packb(grants)
    if row is not None:
        if row[0] != cmd["owner"]:
            raise Failed("BucketAlreadyExists")
        if not cmd.get("legacy_recreate") or cmd.get("object_lock"):
            raise Failed("BucketAlreadyOwnedByYou")
        # us-east-1's legacy rule: re-creating your own bucket succeeds and resets its ACL
        db.execute("UPDATE buckets SET acl=?, grants=? WHERE name=?", (canned or "private", stored, cmd["bucket"]))
        return {"recreated": True}
    db.execute(
        "INSERT INTO buckets (name, owner, created, acl, grants) VALUES (?,?,?,?,?)",
        (cmd["bucket"], cmd["owner"], cmd["ts"], canned or "private", stored),
    )
    if ownership is not None:
        db.execute("INSERT INTO bucket_config VALUES (?,?,?)", (cmd["bucket"], "ownership", packb(ownership)))
    if cmd.get("object_lock"):
        versions.enable_lock_at_creation(db, cmd["bucket"])
    return {}


def cmd_delete_bucket(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    if not bucket_exists(db, cmd["bucket"]):
        raise Failed("NoSuchBucket")
    for table in ("objects", "versions"):  # noncurrent versions and delete markers count
        if db.execute(f"SELECT 1 FROM {table} WHERE bucket=? LIMIT 1", (cmd["bucket"],)).fetchone():
            raise Failed("BucketNotEmpty")
    for (upload_id,) in db.execute("SELECT upload_id FROM uploads WHERE bucket=?", (cmd["bucket"],)).fetchall():
        multipart.drop_upload(db, upload_id, cmd["ts"])  # in-progress uploads go with the bucket
    iam.drop_bucket_grants(db, cmd["bucket"])
    lifecycle.drop_bucket(db, cmd["bucket"])
    db.execute("DELETE FROM bucket_config WHERE bucket=?", (cmd["bucket"],))
    db.execute("DELETE FROM buckets WHERE name=?", (cmd["bucket"],))
    return {}


def cmd_set_bucket_config(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """A bucket's sub-resource document (e.g. ``cors``); ``value`` None removes it."""
    if not bucket_exists(db, cmd["bucket"]):
        raise Failed("NoSuchBucket")
    if cmd["name"] in GUARDED:
        raise Failed("InvalidRequest", f"{cmd['name']} is set by its own command")
    if cmd.get("value") is None:
        db.execute("DELETE FROM bucket_config WHERE bucket=? AND name=?", (cmd["bucket"], cmd["name"]))
    else:
        db.execute("INSERT OR REPLACE INTO bucket_config VALUES (?,?,?)", (cmd["bucket"], cmd["name"], packb(cmd["value"])))
    return {}


def q_bucket(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    row = db.execute("SELECT owner, created, acl FROM buckets WHERE name=?", (q["bucket"],)).fetchone()
    if row is None:
        raise Failed("NoSuchBucket")
    return {"owner": row[0], "created": row[1], "acl": row[2]}


def q_buckets(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    rows = db.execute("SELECT name, created FROM buckets ORDER BY name").fetchall()
    return {"buckets": [list(r) for r in rows]}


def q_bucket_config(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    if not bucket_exists(db, q["bucket"]):
        raise Failed("NoSuchBucket")
    row = db.execute("SELECT value FROM bucket_config WHERE bucket=? AND name=?", (q["bucket"], q["name"])).fetchone()
    return {"value": unpackb(row[0]) if row else None}


COMMANDS = {
    "create_bucket": cmd_create_bucket,
    "delete_bucket": cmd_delete_bucket,
    "set_bucket_config": cmd_set_bucket_config,
}
QUERIES = {"bucket": q_bucket, "buckets": q_buckets, "bucket_config": q_bucket_config}
