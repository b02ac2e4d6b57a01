"""ListObjectVersions: every version and delete marker of a bucket (key ascending, newest
first), merged from the two tables that hold them (``versions``' module docstring says
which version lives where), a page an indexed range scan of each."""

from __future__ import annotations

import sqlite3
from typing import Any

from raftmeta.sm.tables import Failed, bucket_exists, successor
from raftmeta.sm.versions import NULL, find, parse_vid, vid_of

SCHEMA = ""

_ARM = ("SELECT key, version AS seq, null_id, 0 AS marker, size, etag, created, 1 AS latest FROM objects "
        "WHERE bucket=? AND {cond} UNION ALL "
        "SELECT key, seq, null_id, marker, size, etag, created, superseded IS NULL FROM versions "
        "WHERE bucket=? AND {cond} ORDER BY key, seq DESC LIMIT ?")
_SAME_KEY = _ARM.format(cond="key=? AND seq<?")
_AFTER_KEY = _ARM.format(cond="key{lo}?{hi}")  # one lower bound, so the index seeks straight to it


def _rows(db: sqlite3.Connection, bucket: str, after: tuple[str, int | None], lo: str, hi: str | None,
          limit: int) -> list[tuple[Any, ...]]:
    """Up to ``limit`` versions in listing order (key ascending, newest first) after
    ``after`` ((key, seq), or (key, None): after all of that key's), with keys in [lo, hi)."""
    key, seq = after
    rows: list[tuple[Any, ...]] = []
    if seq is not None and key >= lo and (hi is None or key < hi):
        rows = db.execute(_SAME_KEY, (bucket, key, seq, bucket, key, seq, limit)).fetchall()
    if len(rows) < limit:
        bound, op = (lo, ">=") if lo > key else (key, ">")
        args: tuple[Any, ...] = (bound,) if hi is None else (bound, hi)
        sql = _AFTER_KEY.replace("{lo}", op).replace("{hi}", "" if hi is None else " AND key<?")
        rows += db.execute(sql, (bucket, *args, bucket, *args, limit - len(rows))).fetchall()
    return rows


def q_list_versions(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """One page of ListObjectVersions: versions and delete markers (key ascending, newest
    first) and common prefixes, ``max_keys`` in all, after ``key_marker`` and
    ``vid_marker``. Each step is an indexed range scan of both tables, merged."""
    bucket, prefix, delimiter = q["bucket"], q.get("prefix", ""), q.get("delimiter", "")
    max_keys, key_marker, vid_marker = q.get("max_keys", 1000), q.get("key_marker", ""), q.get("vid_marker")
    if not bucket_exists(db, bucket):
        raise Failed("NoSuchBucket")
    after: tuple[str, int | None] = (key_marker, None)
    if key_marker and vid_marker:
        # A position, not a version that must still exist: a client deleting what it
        # lists pages on after versions it has just deleted.
        seq = parse_vid(vid_marker)
        if seq is None:
            marked = find(db, bucket, key_marker, NULL)
            seq = marked.seq if marked is not None else None
        after = (key_marker, seq)
    entries: list[dict[str, Any]] = []
    prefixes: list[str] = []
    out = {"entries": entries, "prefixes": prefixes, "truncated": False}
    lo, hi = prefix, successor(prefix)
    while max_keys > 0:
        limit = max_keys - len(entries) - len(prefixes) + 1
        rows = _rows(db, bucket, after, lo, hi, limit)
        restart = False
        for key, seq, null_id, marker, size, etag, created, latest in rows:
            common = ""
            if delimiter and (pos := key.find(delimiter, len(prefix))) >= 0:
                common = key[: pos + len(delimiter)]
            if len(entries) + len(prefixes) == max_keys:
                out["truncated"] = True
                return out
            if common:
                if not key_marker.startswith(common):  # else returned on an earlier page
                    prefixes.append(common)
                    out["next_key"], out["next_vid"] = common, None
                nxt = successor(common)
                if nxt is None:
                    return out
                lo, after, restart = max(lo, nxt), (key, None), True
                break
            entries.append({"key": key, "vid": vid_of(seq, null_id), "marker": bool(marker), "size": size,
                            "etag": etag, "created": created, "latest": bool(latest)})
            out["next_key"], out["next_vid"] = key, vid_of(seq, null_id)
            after = (key, seq)
        if not restart and len(rows) < limit:
            break
    return out



QUERIES = {"list_versions": q_list_versions}
COMMANDS: dict[str, Any] = {}
