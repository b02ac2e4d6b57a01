"""Object lock's rules, pure of storage: whether a version is locked, the default
retention a new version gets, and which retention changes are allowed. ``versions``
applies them inside the Raft apply, on every path that removes or changes a version."""

from __future__ import annotations

import sqlite3
from typing import Any

from raftmeta.sm.tables import Failed, bucket_setting

LOCKED = "Access Denied because object protected by object lock."
DAY = 86400.0  # retention periods are calendar days, never the lifecycle test day
MODES = ("GOVERNANCE", "COMPLIANCE")


def locked(meta: dict[str, Any], ts: float, bypass: bool = False) -> bool:
    """Whether object lock keeps this version at ``ts`` (``bypass``: governance bypassed)."""
    if meta.get("hold"):
        return True
    retention = meta.get("retention")
    return bool(retention) and retention[1] > ts and (retention[0] == "COMPLIANCE" or not bypass)


INTEGRITY = ("Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock "
             "parameters")


def apply_lock_defaults(db: sqlite3.Connection, bucket: str, obj: dict[str, Any], ts: float,
                        integrity: bool = True) -> None:
    """A new version gets the bucket's default retention unless it names its own; lock
    settings on a bucket without object lock are refused. ``integrity``: the upload
    carried Content-MD5 or a checksum, which S3 demands of a PUT that retention applies
    to (the frontend checks it for explicit headers; a default is only known here)."""
    meta = obj.setdefault("meta", {})
    config = bucket_setting(db, bucket, "object_lock")
    if not config:
        if meta.get("retention") or meta.get("hold"):
            raise Failed("InvalidRequest", "Bucket is missing Object Lock Configuration")
        return
    if not meta.get("retention") and config.get("mode"):
        if not integrity:
            raise Failed("InvalidRequest", INTEGRITY)
        days = config.get("days") or 365 * (config.get("years") or 0)
        meta["retention"] = [config["mode"], ts + days * DAY]


def check_retention_change(old: list[Any] | None, new: list[Any] | None, ts: float, bypass: bool) -> None:
    """PutObjectRetention's rule: an unexpired retention can be extended in its own mode;
    COMPLIANCE allows nothing else; GOVERNANCE can be shortened, removed or changed to
    COMPLIANCE only with ``bypass`` (AWS: its lock settings change only with the
    s3:BypassGovernanceRetention permission)."""
    if not old or old[1] <= ts:
        return
    if new is not None and new[0] == old[0] and new[1] >= old[1]:
        return
    if old[0] == "COMPLIANCE" or not bypass:
        raise Failed("AccessDenied", LOCKED)
