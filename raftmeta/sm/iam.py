"""Users (with canonical ids and e-mail addresses, for ACL grants), access keys and
per-bucket Cairn grants in the state machine (ACLs themselves: ``acls``).

Every change is a Raft command, so it holds on every frontend at once (frontends look
keys and grants up with linearizable reads). Secrets are stored here because SigV4
verification needs them; they are returned only to a frontend's key lookup, never by
a listing.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from typing import Any

from core import acl
from core.access import bucket_allows, object_check
from raftmeta.sm import acls, objects
from raftmeta.sm.tables import Failed, bucket_exists

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, created REAL NOT NULL, admin INTEGER NOT NULL DEFAULT 0,
    canonical_id TEXT, email TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS keys (
    access_key TEXT PRIMARY KEY, user TEXT NOT NULL, secret TEXT NOT NULL, created REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS keys_by_user ON keys (user);
CREATE TABLE IF NOT EXISTS grants (
    bucket TEXT NOT NULL, user TEXT NOT NULL, permission TEXT NOT NULL, PRIMARY KEY (bucket, user)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS grants_by_user ON grants (user);
"""

PERMISSIONS = ("read", "write", "list", "full")


def migrate(db: sqlite3.Connection) -> None:
    """Users gain a canonical id (a hash of the name, so every replica derives the same)
    and an optional e-mail address, both for ACL grants."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(users)")}
    for column in ("canonical_id", "email"):
        if column not in columns:
            db.execute(f"ALTER TABLE users ADD COLUMN {column} TEXT")
    for (name,) in db.execute("SELECT name FROM users WHERE canonical_id IS NULL").fetchall():
        db.execute("UPDATE users SET canonical_id=? WHERE name=?", (acl.canonical_id(name), name))
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS users_by_id ON users (canonical_id)")
    db.execute("CREATE INDEX IF NOT EXISTS users_by_email ON users (email)")


def _user_exists(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone() is not None


def cmd_create_user(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    if _user_exists(db, cmd["name"]):
        raise Failed("UserAlreadyExists")
    email = cmd.get("email")
    if email is not None and (not isinstance(email, str) or "@" not in email):
        raise Failed("InvalidArgument", "not an e-mail address")
    if email and db.execute("SELECT 1 FROM users WHERE email=?", (email.lower(),)).fetchone():
        raise Failed("EmailInUse")
    db.execute("INSERT INTO users (name, created, admin, canonical_id, email) VALUES (?,?,?,?,?)",
               (cmd["name"], cmd["ts"], int(bool(cmd.get("admin"))), acl.canonical_id(cmd["name"]),
                email.lower() if email else None))
    return {}


def cmd_delete_user(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    name = cmd["name"]
    if not _user_exists(db, name):
        raise Failed("NoSuchUser")
    if db.execute("SELECT 1 FROM buckets WHERE owner=? LIMIT 1", (name,)).fetchone():
        raise Failed("UserOwnsBuckets")
    db.execute("DELETE FROM keys WHERE user=?", (name,))
    db.execute("DELETE FROM grants WHERE user=?", (name,))
    db.execute("DELETE FROM users WHERE name=?", (name,))
    return {}


def cmd_create_key(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    if not _user_exists(db, cmd["user"]):
        raise Failed("NoSuchUser")
    if db.execute("SELECT 1 FROM keys WHERE access_key=?", (cmd["access_key"],)).fetchone():
        raise Failed("KeyAlreadyExists")
    db.execute("INSERT INTO keys VALUES (?,?,?,?)", (cmd["access_key"], cmd["user"], cmd["secret"], cmd["ts"]))
    return {}


def cmd_delete_key(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    if db.execute("DELETE FROM keys WHERE access_key=?", (cmd["access_key"],)).rowcount == 0:
        raise Failed("NoSuchKeyId")
    return {}


def cmd_grant(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    if not bucket_exists(db, cmd["bucket"]):
        raise Failed("NoSuchBucket")
    if not _user_exists(db, cmd["user"]):
        raise Failed("NoSuchUser")
    if cmd.get("permission") is None:
        db.execute("DELETE FROM grants WHERE bucket=? AND user=?", (cmd["bucket"], cmd["user"]))
    elif cmd["permission"] in PERMISSIONS:
        db.execute("INSERT OR REPLACE INTO grants VALUES (?,?,?)", (cmd["bucket"], cmd["user"], cmd["permission"]))
    else:
        raise Failed("InvalidArgument")
    return {}


def drop_bucket_grants(db: sqlite3.Connection, bucket: str) -> None:
    """A deleted bucket's grants go with it (``buckets.cmd_delete_bucket``)."""
    db.execute("DELETE FROM grants WHERE bucket=?", (bucket,))


COMMANDS = {
    "create_user": cmd_create_user,
    "delete_user": cmd_delete_user,
    "create_key": cmd_create_key,
    "delete_key": cmd_delete_key,
    "grant": cmd_grant,
}


def q_key(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """A frontend's lookup of an access key: its user and secret, or found False."""
    row = db.execute(
        "SELECT k.user, k.secret, u.admin FROM keys k JOIN users u ON u.name = k.user WHERE k.access_key=?",
        (q["access_key"],),
    ).fetchone()
    if row is None:
        return {"found": False}
    return {"found": True, "user": row[0], "secret": row[1], "admin": bool(row[2])}


def check_as(db: sqlite3.Connection, caller: dict[str, Any]) -> None:
    """Authorize a command for the caller it carries (``as``: a frontend's write whose
    key and access were not read first, ``frontend.iam.commit_as``), in the command's
    own apply, so the decision and the write see one state. Raises InvalidAccessKeyId
    (the key is gone, or is not the one the frontend verified the signature with),
    NoSuchBucket or AccessDenied, in the order a frontend's own checks would."""
    key = q_key(db, {"access_key": caller.get("access_key", "")})
    digest = hashlib.sha256(key["secret"].encode()).hexdigest() if key["found"] else ""
    if not key["found"] or not hmac.compare_digest(digest, str(caller.get("secret", ""))) \
            or key["user"] != caller.get("user"):
        raise Failed("InvalidAccessKeyId")
    if key["admin"]:
        return
    access = q_access(db, {"bucket": caller.get("bucket", ""), "user": key["user"]})
    if not access["exists"]:
        raise Failed("NoSuchBucket")
    if not bucket_allows(access, key["user"], str(caller.get("need", ""))):
        raise Failed("AccessDenied")


def q_access(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """What a frontend needs to authorize a request on a bucket: its owner, grants,
    ownership rule and public access block (``acls.bucket_acl``) and the caller's Cairn
    grant (the caller as ``user``, or as ``access_key``)."""
    try:
        info = acls.bucket_acl(db, q["bucket"])
    except Failed:
        return {"exists": False}
    user = q.get("user") or ""
    if q.get("access_key"):  # the caller named by its key: resolved in the same read
        found = db.execute("SELECT user FROM keys WHERE access_key=?", (q["access_key"],)).fetchone()
        user = found[0] if found else ""
    grant = db.execute("SELECT permission FROM grants WHERE bucket=? AND user=?", (q["bucket"], user)).fetchone()
    return {"exists": True, **info, "permission": grant[0] if grant else None}


def q_object_as(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """GetObject's and HeadObject's read of a version for the caller named by
    ``access_key``, read with its key and access (one round trip): the version read with
    the object ACL check the frontend's authorization adds for that caller
    (``core.access.object_check``; none for an admin), returned with ``check`` and the
    read's ``reply``. The frontend uses the reply only when its own authorization, from
    the key and access it read, decided that very check. Nothing for an unknown key or
    bucket: the frontend refuses those itself."""
    key = q_key(db, {"access_key": q["access_key"]})
    if not key["found"]:
        return {}
    check = None
    if not key["admin"]:
        access = q_access(db, {"bucket": q["bucket"], "user": key["user"]})
        if not access["exists"]:
            return {}
        check = object_check(access, key["user"], "read")
    read = {"bucket": q["bucket"], "key": q["key"], "vid": q.get("vid"), **({"check": check} if check else {})}
    try:
        reply = objects.q_object(db, read)
        reply.setdefault("ok", True)
    except Failed as exc:
        reply = {**exc.extra, "ok": False, "err": exc.code, "msg": exc.msg}
    return {"check": check, "reply": reply}


def q_users(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    users = []
    for name, created, admin, cid, email in db.execute(
            "SELECT name, created, admin, canonical_id, email FROM users ORDER BY name").fetchall():
        keys = [r[0] for r in db.execute("SELECT access_key FROM keys WHERE user=? ORDER BY created", (name,))]
        grants = {b: p for b, p in db.execute("SELECT bucket, permission FROM grants WHERE user=?", (name,))}
        users.append({"name": name, "created": created, "admin": bool(admin), "canonical_id": cid,
                      "email": email, "access_keys": keys, "grants": grants})
    return {"users": users}


def q_bucket_grants(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    rows = db.execute("SELECT user, permission FROM grants WHERE bucket=? ORDER BY user", (q["bucket"],)).fetchall()
    return {"grants": [list(r) for r in rows]}


def q_visible_buckets(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """ListBuckets for one user: the buckets it owns or holds a grant on."""
    rows = db.execute(
        "SELECT name, created FROM buckets WHERE owner=? OR name IN (SELECT bucket FROM grants WHERE user=?) "
        "ORDER BY name", (q["user"], q["user"]),
    ).fetchall()
    return {"buckets": [list(r) for r in rows]}


QUERIES = {"key": q_key, "access": q_access, "object_as": q_object_as, "users": q_users, "bucket_grants": q_bucket_grants,
           "visible_buckets": q_visible_buckets}
