"""Lifecycle in the state machine: what the leader's lifecycle chore reads (the buckets
with rules, one bounded batch of keys with their whole histories, stale uploads) and
the one command that acts on a batch (``lifecycle_apply``), re-checking each action
against the state it applies to, so a stale read never expires the wrong version, and
recording the chore's cursor so a new leader resumes where the old one stopped."""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

from raftmeta.sm import multipart, versions
from raftmeta.sm.tables import Failed, bucket_exists, bucket_setting, packb, successor, unpackb

SCHEMA = """
CREATE TABLE IF NOT EXISTS lifecycle_progress (
    bucket TEXT PRIMARY KEY, cursor TEXT NOT NULL, pass_started REAL NOT NULL, last_completed REAL,
    examined INTEGER NOT NULL, expired INTEGER NOT NULL, passes INTEGER NOT NULL
) WITHOUT ROWID;
"""


_PROGRESS = ("cursor", "pass_started", "last_completed", "examined", "expired", "passes")


def q_lifecycle_buckets(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """Every bucket with a lifecycle configuration: its rules, versioning state and progress."""
    out = []
    for bucket, value in db.execute("SELECT bucket, value FROM bucket_config WHERE name='lifecycle' ORDER BY bucket"):
        row = db.execute(f"SELECT {', '.join(_PROGRESS)} FROM lifecycle_progress WHERE bucket=?",
                         (bucket,)).fetchone()
        progress = dict(zip(_PROGRESS, row, strict=True)) if row else None
        rules = unpackb(value)
        out.append({"bucket": bucket, "rules": rules, "digest": rules_digest(rules),
                    "versioning": versions.versioning(db, bucket), "progress": progress})
    return {"buckets": out}


def q_lifecycle_scan(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """Up to ``limit`` keys after ``after``, each with its whole history newest first
    (seq, null, marker, size, created, superseded, tags), for the rule evaluator."""
    bucket, after, limit = q["bucket"], q.get("after", ""), int(q.get("limit", 100))
    keys = _next_keys(db, bucket, after, limit)
    out = []
    for key in keys:
        # what the evaluator needs, never the manifests: a long history costs its rows only
        rows = db.execute(
            "SELECT version, null_id, 0, size, created, NULL, meta FROM objects WHERE bucket=? AND key=? UNION ALL "
            "SELECT seq, null_id, marker, size, created, superseded, meta FROM versions WHERE bucket=? AND key=? "
            "ORDER BY 1 DESC", (bucket, key, bucket, key)).fetchall()
        history = [{"seq": seq, "null": bool(null_id), "marker": bool(marker), "size": size, "created": created,
                    "superseded": superseded, "tags": dict(unpackb(meta).get("tags") or [])}
                   for seq, null_id, marker, size, created, superseded, meta in rows]
        out.append([key, history])
    return {"keys": out, "done": len(keys) < limit}


def _next_keys(db: sqlite3.Connection, bucket: str, after: str, limit: int) -> list[str]:
    """The next ``limit`` keys with any version: current objects by their index, keys of
    ``versions`` one seek each (a key's many versions are skipped, not read)."""
    current = [r[0] for r in db.execute("SELECT key FROM objects WHERE bucket=? AND key>? ORDER BY key LIMIT ?",
                                        (bucket, after, limit))]
    others: list[str] = []
    last = after
    while len(others) < limit:
        row = db.execute("SELECT key FROM versions WHERE bucket=? AND key>? ORDER BY key LIMIT 1",
                         (bucket, last)).fetchone()
        if row is None or (len(current) == limit and row[0] > current[-1]):
            break
        others.append(row[0])
        last = row[0]
    return sorted(set(current) | set(others))[:limit]


def rules_digest(rules: Any) -> str:
    """What the chore evaluated against, so the apply can tell the rules changed since."""
    return hashlib.sha256(packb(rules)).hexdigest()


def q_lifecycle_uploads(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """The oldest uploads under ``prefix`` initiated before ``before`` (one rule's candidates)."""
    prefix = q.get("prefix", "")
    hi = successor(prefix)
    sql = "SELECT upload_id, key, created FROM uploads WHERE bucket=? AND created < ? AND key >= ?"
    args: list[Any] = [q["bucket"], q["before"], prefix]
    if hi is not None:
        sql += " AND key < ?"
        args.append(hi)
    rows = db.execute(sql + " ORDER BY created LIMIT ?", (*args, int(q.get("limit", 1000)))).fetchall()
    return {"uploads": [{"upload_id": u, "key": k, "created": c} for u, k, c in rows]}


def _act(db: sqlite3.Connection, bucket: str, key: str, action: str, seq: int, ts: float, new_seq: int) -> bool:
    """One action, if the state still calls for it; object lock is ``versions.remove``'s."""
    now = versions.latest(db, bucket, key)
    if now is None:
        return False
    if action == "expire":  # the current object, as a DELETE without version id would
        if now.marker or now.seq != seq:
            return False
        versions.delete_latest(db, bucket, key, ts, new_seq)
        return True
    if action == "noncurrent":  # a noncurrent version or delete marker, never the latest
        target = db.execute("SELECT 1 FROM versions WHERE bucket=? AND key=? AND seq=? AND seq<?",
                            (bucket, key, seq, now.seq)).fetchone()
        if target is None:
            return False
        versions.remove(db, versions.find(db, bucket, key, _vid(db, bucket, key, seq)), ts)
        return True
    if action == "marker":  # an expired delete marker: the latest, and the only version left
        count = db.execute("SELECT count(*) FROM (SELECT 1 FROM versions WHERE bucket=? AND key=? LIMIT 2)",
                           (bucket, key)).fetchone()[0]
        if not now.marker or now.seq != seq or count != 1:
            return False
        versions.remove(db, now, ts)
        return True
    raise Failed("InvalidArgument", f"unknown lifecycle action {action!r}")


def _vid(db: sqlite3.Connection, bucket: str, key: str, seq: int) -> str:
    row = db.execute("SELECT null_id FROM versions WHERE bucket=? AND key=? AND seq=?", (bucket, key, seq)).fetchone()
    return versions.vid_of(seq, row[0])


def drop_bucket(db: sqlite3.Connection, bucket: str) -> None:
    """A deleted bucket's progress goes with it (a new bucket of that name starts afresh)."""
    db.execute("DELETE FROM lifecycle_progress WHERE bucket=?", (bucket,))


def cmd_lifecycle_apply(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """A batch of the lifecycle chore's actions on one bucket ([key, action, seq]; at most
    ``versions.SEQ_SPAN``), upload aborts (``aborts``), and its cursor: ``cursor`` the
    last key examined, ``examined`` how many, ``done`` the pass reached the end. An
    action that no longer applies (the version changed, or object lock keeps it) is
    skipped, never an error."""
    bucket, ts = cmd["bucket"], cmd["ts"]
    if not bucket_exists(db, bucket):
        raise Failed("NoSuchBucket")
    actions = cmd.get("actions", [])
    if len(actions) > versions.SEQ_SPAN:
        raise Failed("InvalidArgument", "too many lifecycle actions in one entry")
    if "rules" in cmd and cmd["rules"] != rules_digest(bucket_setting(db, bucket, "lifecycle")):
        return {"expired": 0, "skipped": len(actions), "aborted": 0, "changed": True}  # evaluated against old rules
    expired = skipped = 0
    for position, (key, action, seq) in enumerate(actions):
        try:
            done = _act(db, bucket, key, action, seq, ts, versions.seq_of(cmd["index"], position))
        except Failed as exc:
            if exc.code != "AccessDenied":
                raise
            done = False  # object lock keeps it
        expired += done
        skipped += not done
    aborted = 0
    for upload_id in cmd.get("aborts", []):
        if db.execute("SELECT 1 FROM uploads WHERE upload_id=? AND bucket=?", (upload_id, bucket)).fetchone():
            multipart.drop_upload(db, upload_id, ts)
            aborted += 1
    row = db.execute("SELECT pass_started, examined, expired, passes, last_completed FROM lifecycle_progress "
                     "WHERE bucket=?", (bucket,)).fetchone()
    started, examined, total, passes, last = row if row else (ts, 0, 0, 0, None)
    if cmd.get("fresh"):
        started, examined = ts, 0
    examined += int(cmd.get("examined", 0))
    total += expired + aborted
    if cmd.get("done"):
        passes, last = passes + 1, ts
    db.execute("INSERT OR REPLACE INTO lifecycle_progress VALUES (?,?,?,?,?,?,?)",
               (bucket, "" if cmd.get("done") else cmd.get("cursor", ""), started, last, examined, total, passes))
    return {"expired": expired, "skipped": skipped, "aborted": aborted}


COMMANDS = {"lifecycle_apply": cmd_lifecycle_apply}
QUERIES = {"lifecycle_buckets": q_lifecycle_buckets, "lifecycle_scan": q_lifecycle_scan,
           "lifecycle_uploads": q_lifecycle_uploads}
